"""ClusterSettings parsing and apply_step_settings on a compiled pipeline."""

import sys
from pathlib import Path

import pytest
import yaml
from kfp import compiler

from kerasflow.pipelines.cluster_settings import (
    MLFLOW_CREDENTIALS_SECRET,
    POD_LABEL_KEY,
    STEPS,
    ClusterSettings,
    apply_step_settings,
    load_cluster_settings,
)
from kerasflow.runtime.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from kfp_api_stub import build_standin_pipeline  # noqa: E402

pytestmark = pytest.mark.unit


def compile_standin(settings: ClusterSettings, tmp_path: Path) -> tuple[dict, dict]:
    """Compiles the stand-in pipeline with `settings`; returns (pipeline spec, k8s executors)."""
    path = tmp_path / "pipeline.yaml"
    compiler.Compiler().compile(build_standin_pipeline(settings), str(path))
    docs = list(yaml.safe_load_all(path.read_text()))
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return docs[0], platform


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the spec by name, sub-DAGs included."""
    dags = [spec["root"]["dag"]] + [c["dag"] for c in spec["components"].values() if "dag" in c]
    return {name: task for dag in dags for name, task in dag["tasks"].items()}


def test_defaults_cover_every_step_with_heavier_search_and_training():
    settings = ClusterSettings()
    assert set(STEPS) <= set(settings.steps)
    train = settings.for_step("train")
    assert (train.cpu_request, train.memory_limit) == ("2", "8Gi")
    assert settings.for_step("ingest_clean").memory_limit == "2Gi"
    assert settings.for_step("train").retry.num_retries == 2
    deploy = settings.for_step("deploy")
    assert deploy.caching is False
    assert deploy.retry.num_retries == 1
    assert deploy.retry.backoff_duration == "30s"
    assert settings.for_step("not-a-step") == settings.defaults
    assert [s.secret_name for s in settings.secrets] == [MLFLOW_CREDENTIALS_SECRET]


def test_layers_resolve_builtin_then_file_defaults_then_file_step():
    settings = ClusterSettings.from_mapping(
        {
            "defaults": {"memory_limit": "3Gi", "retry": {"num_retries": 5}},
            "steps": {"train": {"memory_limit": "16Gi", "gpu": 1, "caching": False}},
        }
    )
    assert settings.for_step("augment").memory_limit == "3Gi"
    assert settings.for_step("augment").cpu_limit == "2"
    train = settings.for_step("train")
    assert (train.memory_limit, train.gpu, train.caching) == ("16Gi", 1, False)
    assert train.retry.num_retries == 5
    assert train.retry.backoff_factor == 2.0
    assert settings.for_step("deploy").retry.num_retries == 5
    assert settings.defaults.memory_limit == "3Gi"


def test_numbers_become_quantities_and_durations():
    settings = ClusterSettings.from_mapping(
        {"defaults": {"cpu_limit": 3, "retry": {"backoff_duration": 10}}}
    )
    assert settings.defaults.cpu_limit == "3"
    assert settings.defaults.retry.backoff_duration == "10s"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"imagee": "x"}, "unknown key 'imagee'"),
        ({"steps": {"trian": {}}}, "unknown step 'trian'"),
        ({"steps": {"train": {"gpus": 1}}}, "unknown key 'gpus' in steps.train"),
        ({"defaults": {"cpu_request": "two"}}, "defaults.cpu_request"),
        ({"defaults": {"memory_limit": "8GB"}}, "defaults.memory_limit"),
        ({"defaults": {"gpu": -1}}, "defaults.gpu"),
        ({"defaults": {"caching": "no"}}, "defaults.caching"),
        ({"defaults": {"retry": {"tries": 3}}}, "unknown key 'tries' in defaults.retry"),
        ({"defaults": {"retry": {"backoff_factor": 0.5}}}, "backoff_factor"),
        ({"defaults": {"retry": {"backoff_duration": "soon"}}}, "backoff_duration"),
        ({"pipeline_root": "/tmp/root"}, "pipeline_root"),
        ({"gpu_tolerations": [{"key": "a", "operator": "In"}]}, "operator"),
        ({"gpu_tolerations": [{"key": "a", "effect": "Never"}]}, "effect"),
        ({"secrets": [{"secret_name": "s"}]}, "needs both"),
        ({"secrets": [{"secret_name": "s", "env": {}}]}, "at least one"),
        ({"secrets": [{"secret_name": "s", "env": {"k": "V"}, "steps": ["x"]}]}, "unknown step"),
        ({"steps": ["train"]}, "'steps' must be a mapping"),
        ({"image_pull_secrets": "regcred"}, "must be a list"),
        ({"steps": {"deploy": {"pvc_mounts": {"models": "rel"}}}}, "absolute path"),
    ],
)
def test_bad_settings_name_the_problem(data, fragment):
    with pytest.raises(UserError, match=None) as info:
        ClusterSettings.from_mapping(data)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_non_mapping_is_refused():
    with pytest.raises(UserError, match="mapping"):
        ClusterSettings.from_mapping(["train"])


def test_load_cluster_settings_reports_file_problems(tmp_path):
    assert load_cluster_settings(None) == ClusterSettings()
    with pytest.raises(UserError, match="not found"):
        load_cluster_settings(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_cluster_settings(str(bad))
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n")
    with pytest.raises(UserError, match="mapping"):
        load_cluster_settings(str(listed))
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("defaults:\n  cpu: 2\n")
    with pytest.raises(UserError, match=r"wrong\.yaml: unknown key 'cpu'"):
        load_cluster_settings(str(wrong))
    good = tmp_path / "good.yaml"
    good.write_text("pipeline_root: gs://b/kfp\nsteps:\n  train:\n    gpu: 2\n")
    loaded = load_cluster_settings(str(good))
    assert loaded.pipeline_root == "gs://b/kfp"
    assert loaded.for_step("train").gpu == 2


def test_image_choice_per_step():
    settings = ClusterSettings.from_mapping(
        {
            "image": "reg/kf:1",
            "gpu_image": "reg/kf:1-gpu",
            "steps": {"train": {"gpu": 1}, "deploy": {"image": "reg/deployer:2"}},
        }
    )
    assert settings.image_for("train") == "reg/kf:1-gpu"
    assert settings.image_for("evaluate") == "reg/kf:1"
    assert settings.image_for("deploy") == "reg/deployer:2"
    assert ClusterSettings().image_for("train") == ""
    assert ClusterSettings().with_image("reg/kf:9").image_for("augment") == "reg/kf:9"


def test_apply_step_settings_reaches_the_compiled_spec(tmp_path):
    settings = ClusterSettings.from_mapping(
        {
            "image": "reg/kerasflow:1.2",
            "gpu_image": "reg/kerasflow:1.2-gpu",
            "image_pull_secrets": ["regcred"],
            "gpu_node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
            "steps": {
                "train": {"gpu": 1, "env": {"TF_CPP_MIN_LOG_LEVEL": "2"}},
                "hyperparameter_search": {"timeout_seconds": 7200},
                "deploy": {"pvc_mounts": {"kerasflow-models": "/models"}},
            },
            "secrets": [
                {
                    "secret_name": "mlflow-client-credentials",
                    "env": {"username": "MLFLOW_TRACKING_USERNAME"},
                },
                {"secret_name": "gcs-hmac", "env": {"key": "GCS_KEY"}, "steps": ["deploy"]},
            ],
        }
    )
    spec, k8s = compile_standin(settings, tmp_path)
    executors = spec["deploymentSpec"]["executors"]
    tasks = all_tasks(spec)

    train = executors["exec-train"]["container"]
    assert train["image"] == "reg/kerasflow:1.2-gpu"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert train["resources"]["resourceMemoryLimit"] == "8Gi"
    assert {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"} in train["env"]
    assert k8s["exec-train"]["nodeSelector"]["labels"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4"
    }
    assert k8s["exec-train"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]

    augment = executors["exec-augment"]["container"]
    assert augment["image"] == "reg/kerasflow:1.2"
    assert "accelerator" not in augment["resources"]
    assert "nodeSelector" not in k8s["exec-augment"]
    assert "tolerations" not in k8s["exec-augment"]

    assert tasks["train"]["retryPolicy"]["maxRetryCount"] == 2
    assert tasks["train"]["retryPolicy"]["backoffDuration"] == "30s"
    assert tasks["deploy"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["train"]["cachingOptions"]["enableCache"] is True
    assert k8s["exec-hyperparameter-search"]["activeDeadlineSeconds"] == "7200"
    (mount,) = k8s["exec-deploy"]["pvcMount"]
    assert (mount["constant"], mount["mountPath"]) == ("kerasflow-models", "/models")
    assert "pvcMount" not in k8s["exec-train"]

    for executor in ("exec-ingest-clean", "exec-train", "exec-deploy"):
        secrets = {s["secretName"] for s in k8s[executor]["secretAsEnv"]}
        assert "mlflow-client-credentials" in secrets
        assert k8s[executor]["imagePullSecret"][0]["secretName"] == "regcred"
        assert POD_LABEL_KEY in k8s[executor]["podMetadata"]["labels"]
    assert "gcs-hmac" in {s["secretName"] for s in k8s["exec-deploy"]["secretAsEnv"]}
    assert "gcs-hmac" not in {s["secretName"] for s in k8s["exec-train"]["secretAsEnv"]}


def test_default_settings_keep_the_component_image(tmp_path):
    spec, _ = compile_standin(ClusterSettings(), tmp_path)
    from kerasflow.settings import DEFAULT_IMAGE

    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {DEFAULT_IMAGE}


def test_unknown_step_gets_the_defaults():
    class FakeTask:
        def __init__(self):
            self.calls = []
            self.platform_config = {}

        def __getattr__(self, name):
            return lambda *a, **k: self.calls.append((name, a, k)) or self

    task = FakeTask()
    apply_step_settings(task, "my_extra_step", ClusterSettings())
    calls = {name: args for name, args, _ in task.calls}
    assert calls["set_cpu_request"] == ("500m",)
    assert calls["set_memory_limit"] == ("2Gi",)
    assert "set_accelerator_limit" not in calls
