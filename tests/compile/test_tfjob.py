"""The multi-worker final fit's TFJob: the component compiles, the job's manifest is valid.

No cluster runs here: the component is compiled to KFP IR and checked; the TFJob's worker pod
is validated strictly against the Kubernetes schema (the TFJob kind itself is a CRD the
schema does not hold, so its own fields are asserted).
"""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from kerasflow.components.train_workers import core
from kerasflow.runtime import tfjob
from kerasflow.settings import DEFAULT_IMAGE

pytestmark = pytest.mark.compile
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())


def manifest(workers=2):
    args = core.worker_args(
        splits_uri="gs://b/root/splits",
        train_uri="gs://b/root/train",
        hparams_uri="gs://b/root/hparams",
        model_uri="gs://b/root/model",
        epochs=5,
        batch_size=64,
        seed=1,
    )
    return core.tfjob.tfjob_manifest(
        name=core.job_name("Run_42/x"),
        namespace="kubeflow-user",
        image="registry.example/kerasflow:1.0",
        workers=workers,
        args=args,
    )


def test_component_compiles_to_ir_that_runs_the_step_in_the_image(tmp_path):
    from kfp import compiler

    from kerasflow.components.train_workers.component import train_workers

    path = tmp_path / "train_workers.yaml"
    compiler.Compiler().compile(train_workers, str(path))
    ir = yaml.safe_load(path.read_text())
    component = ir["components"]["comp-train-workers"]
    inputs = component["inputDefinitions"]
    assert set(inputs["artifacts"]) == {"splits", "train_data", "best_hparams"}
    assert inputs["artifacts"]["splits"]["artifactType"]["schemaTitle"] == "system.Dataset"
    assert {k: v["parameterType"] for k, v in inputs["parameters"].items()} == {
        "workers": "NUMBER_INTEGER",
        "epochs": "NUMBER_INTEGER",
        "batch_size": "NUMBER_INTEGER",
        "seed": "NUMBER_INTEGER",
        "namespace": "STRING",
        "image": "STRING",
        "run_id": "STRING",
    }
    assert component["outputDefinitions"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == (
        "system.Model"
    )
    executor = ir["deploymentSpec"]["executors"]["exec-train-workers"]["container"]
    assert executor["image"] == DEFAULT_IMAGE
    source = "\n".join(executor["command"])
    assert "from kerasflow.components.train_workers import core" in source
    assert "pip install" not in source  # install_kfp_package=False: the image has everything


def test_tfjob_manifest_names_workers_tf_config_and_restarts():
    job = manifest(workers=3)
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
    assert job["metadata"]["name"] == "kerasflow-train-run-42-x"
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3 and worker["restartPolicy"] == "OnFailure"
    assert set(job["spec"]["tfReplicaSpecs"]) == {"Worker"}  # TF_CONFIG: a cluster of workers
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the container the operator gives TF_CONFIG
    assert container["command"] == ["python", "-m", "kerasflow.modeling.distribute"]
    args = container["args"]
    assert args[args.index("--backup-dir") + 1] == "gs://b/root/model-backup"
    with pytest.raises(Exception, match="at least 2 workers"):
        manifest(workers=1)


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_tfjob_worker_pod_passes_strict_schema_validation(version):
    template = manifest()["spec"]["tfReplicaSpecs"]["Worker"]["template"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "worker-0", "namespace": "kubeflow-user", **template["metadata"]},
        "spec": template["spec"],
    }
    kubernetes_validate.validate(pod, version, strict=True)
    bad = {**pod, "spec": {**pod["spec"], "restartPolicyy": "Never"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def test_job_is_created_through_the_api_and_followed_to_its_end():
    class FakeApi:
        def __init__(self, states):
            self.states, self.created = list(states), []

        def create_namespaced_custom_object(self, **kwargs):
            self.created.append(kwargs)

        def get_namespaced_custom_object(self, **kwargs):
            state = self.states.pop(0)
            return {"status": {"conditions": [{"type": state, "status": "True"}]}}

    api = FakeApi(["Created", "Running", "Succeeded"])
    assert tfjob.create_and_wait(manifest(), timeout_s=60, poll_s=0, api=api) == "Succeeded"
    (created,) = api.created
    assert (created["group"], created["version"], created["plural"]) == (
        "kubeflow.org",
        "v1",
        "tfjobs",
    )
    assert created["namespace"] == "kubeflow-user" and created["body"]["kind"] == "TFJob"
    with pytest.raises(Exception, match="TFJob kerasflow-train-run-42-x failed"):
        tfjob.create_and_wait(manifest(), timeout_s=60, poll_s=0, api=FakeApi(["Failed"]))
    with pytest.raises(Exception, match="did not end within 0 s"):
        tfjob.create_and_wait(manifest(), timeout_s=0, poll_s=0, api=FakeApi(["Running"]))
