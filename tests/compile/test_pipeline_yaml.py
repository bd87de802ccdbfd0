"""The compiled pipeline: compared with the checked-in golden YAML, and its shape checked.

After a deliberate change to the DAG, refresh the golden file with
`KERASFLOW_UPDATE_GOLDEN=1 pytest tests/compile` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from kerasflow.pipelines.cli import main
from kerasflow.pipelines.compiling import compile_pipeline
from kerasflow.settings import DEFAULT_IMAGE, STEP_SETTINGS, settings_parameter

pytestmark = pytest.mark.compile

GOLDEN = Path(__file__).parent / "golden" / "training_pipeline.yaml"
CLUSTER_GOLDEN = Path(__file__).parent / "golden" / "training_pipeline_gcp.yaml"
GCP_SETTINGS = Path(__file__).parents[2] / "k8s" / "overlays" / "gcp" / "cluster-settings.yaml"
STEPS = [
    "ingest-clean",
    "normalize-split",
    "augment",
    "hyperparameter-search",
    "train",
    "evaluate",
    "deploy",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    return compile_pipeline(tmp_path_factory.mktemp("c") / "pipeline.yaml")


def test_matches_golden(compiled):
    text = compiled.read_text()
    if os.environ.get("KERASFLOW_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), "compiled pipeline changed; see this module's docstring"


def _all_tasks(spec: dict) -> dict:
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_seven_tasks_all_on_one_image(compiled):
    spec = yaml.safe_load(compiled.read_text())
    tasks = _all_tasks(spec)
    assert sorted(t for t in tasks if t in STEPS) == sorted(STEPS)
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {DEFAULT_IMAGE}
    assert spec["pipelineInfo"]["name"] == "kerasflow-training"


def _exit_handler_body(spec: dict) -> dict:
    """The tasks inside the pipeline's exit handler (every step but finalize)."""
    root = spec["root"]["dag"]["tasks"]
    handler = root["exit-handler-1"]
    return spec["components"][handler["componentRef"]["name"]]["dag"]["tasks"]


def test_every_step_runs_inside_an_exit_handler_whose_finalize_always_runs(compiled):
    spec = yaml.safe_load(compiled.read_text())
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"exit-handler-1", "finalize"}
    final = root["finalize"]
    assert final["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert final["dependentTasks"] == ["exit-handler-1"]
    assert final["cachingOptions"].get("enableCache", False) is False
    status = final["inputs"]["parameters"]["status"]
    assert status["taskFinalStatus"]["producerTask"] == "exit-handler-1"
    body = _exit_handler_body(spec)
    assert {"ingest-clean", "train", "evaluate"} <= set(body)


def test_deploy_runs_only_when_blessed(compiled):
    spec = yaml.safe_load(compiled.read_text())
    body = _exit_handler_body(spec)
    gates = [
        t for t in body.values() if "evaluate" in t.get("triggerPolicy", {}).get("condition", "")
    ]
    assert len(gates) == 1
    branch = spec["components"][gates[0]["componentRef"]["name"]]
    assert "deploy" in branch["dag"]["tasks"]
    assert "deploy" not in body and "deploy" in _all_tasks(spec)


def test_every_setting_is_a_parameter_or_a_key_of_its_steps_structure(compiled):
    spec = yaml.safe_load(compiled.read_text())
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert all(p.get("isOptional") is True for p in params.values())
    assert params["data"]["defaultValue"] == "builtin:digits"
    for step, model in STEP_SETTINGS.items():
        structure = params[settings_parameter(step)]
        assert structure["parameterType"] == "STRUCT"
        defaults = model()
        for key in model.model_fields:
            want = getattr(defaults, key)
            if key in model.HEADLINE:
                assert key not in structure["defaultValue"], (step, key)
                assert params[key]["defaultValue"] == want, (step, key)
            else:
                assert structure["defaultValue"][key] == want, (step, key)
    components = spec["components"]
    for name in ("comp-train", "comp-evaluate", "comp-hyperparameter-search"):
        inputs = components[name]["inputDefinitions"]["parameters"]
        assert inputs["settings"]["parameterType"] == "STRUCT"
        model = STEP_SETTINGS[name.removeprefix("comp-").replace("-", "_")]
        assert set(model.HEADLINE) <= set(inputs), name


def test_component_inputs_are_described(compiled):
    spec = yaml.safe_load(compiled.read_text())
    for name, component in spec["components"].items():
        if not name.startswith("comp-") or "executorLabel" not in component:
            continue
        inputs = component.get("inputDefinitions", {})
        for kind in ("parameters", "artifacts"):
            for key, value in inputs.get(kind, {}).items():
                assert value.get("description"), (name, key)


def test_compile_command_swaps_the_image(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    assert main(["compile", "--output", str(out), "--image", "reg.example/kf:1.2"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"reg.example/kf:1.2"}
    assert "wrote" in capsys.readouterr().out


@pytest.fixture(scope="module")
def compiled_for_gcp(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gcp") / "pipeline.yaml"
    assert main(["compile", "--output", str(out), "--cluster-config", str(GCP_SETTINGS)]) == 0
    return out


def test_cluster_configuration_matches_golden(compiled_for_gcp):
    text = compiled_for_gcp.read_text()
    if os.environ.get("KERASFLOW_UPDATE_GOLDEN") == "1":
        CLUSTER_GOLDEN.write_text(text)
    assert text == CLUSTER_GOLDEN.read_text(), "compiled pipeline changed; see the docstring"


def test_cluster_configuration_sets_resources_gpu_retries_and_root(compiled_for_gcp):
    docs = list(yaml.safe_load_all(compiled_for_gcp.read_text()))
    spec = docs[0]
    assert spec["defaultPipelineRoot"] == "gs://BUCKET/kfp-root"
    executors = spec["deploymentSpec"]["executors"]
    search = next(e for n, e in executors.items() if "hyperparameter-search" in n)
    resources = search["container"]["resources"]
    assert resources["accelerator"]["resourceCount"] == "1"
    assert search["container"]["image"].endswith("kerasflow:0.1.0-gpu")
    ingest = next(e for n, e in executors.items() if "ingest-clean" in n)
    assert ingest["container"]["image"].endswith("kerasflow:0.1.0")
    assert any("retryPolicy" in t for t in spec["root"]["dag"]["tasks"].values())
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert all("secretAsEnv" in e for e in platform.values())


def _executor_env(executor: dict) -> dict:
    return {e["name"]: e["value"] for e in executor["container"].get("env", [])}


def test_plain_compile_applies_the_same_cluster_settings_as_submit(tmp_path):
    from kerasflow.pipelines.cluster_commands import DEFAULT_PIPELINE, load_pipeline
    from kerasflow.pipelines.cluster_settings import (
        MLFLOW_CREDENTIALS_SECRET,
        POD_LABEL_KEY,
        SHIPPED_MLFLOW_URI,
        settings_for_cluster,
    )

    plain = tmp_path / "plain.yaml"
    assert main(["compile", "--output", str(plain)]) == 0
    settings = settings_for_cluster(None)
    submitted = compile_pipeline(
        tmp_path / "submit.yaml",
        pipeline=load_pipeline(DEFAULT_PIPELINE, settings),
        step_settings=settings,
    )
    assert plain.read_text() == submitted.read_text()

    spec, platform = yaml.safe_load_all(plain.read_text())
    executors = spec["deploymentSpec"]["executors"]
    kubernetes = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(kubernetes) == set(executors)
    for name, executor in executors.items():
        assert _executor_env(executor)["MLFLOW_TRACKING_URI"] == SHIPPED_MLFLOW_URI, name
        assert {"resourceCpuLimit", "resourceMemoryLimit"} <= set(
            executor["container"]["resources"]
        ), name
        secrets = {s["secretName"] for s in kubernetes[name]["secretAsEnv"]}
        assert MLFLOW_CREDENTIALS_SECRET in secrets, name
        assert POD_LABEL_KEY in kubernetes[name]["podMetadata"]["labels"], name
    body = _exit_handler_body(spec)
    assert body["train"]["retryPolicy"]["maxRetryCount"] >= 1


def test_only_trial_running_tasks_get_the_gpu_and_its_memory_growth(compiled_for_gcp):
    from kerasflow.pipelines.cluster_settings import GPU_MEMORY_GROWTH_ENV

    spec = next(yaml.safe_load_all(compiled_for_gcp.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    gpu = {n for n, e in executors.items() if "accelerator" in e["container"]["resources"]}
    assert gpu == {
        "exec-hyperparameter-search",
        "exec-hyperparameter-search-worker",
        "exec-train",
    }
    slots = executors["exec-search-worker-slots"]["container"]
    assert slots["resources"]["resourceMemoryLimit"] == "2Gi"
    assert slots["image"].endswith("kerasflow:0.1.0")
    for name, executor in executors.items():
        growth = _executor_env(executor).get(GPU_MEMORY_GROWTH_ENV)
        assert growth == ("true" if name in gpu else None), name
