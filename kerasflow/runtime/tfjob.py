"""A Kubeflow TFJob (Training Operator v1, `kubeflow.org/v1`) for a multi-worker final fit.

The Training Operator starts the job's worker pods, gives each one a `TF_CONFIG` naming all of
them (through a headless service per replica) and restarts a failed worker, which resumes from
Keras' BackupAndRestore state. Kubeflow Trainer v2's TrainJob has no TensorFlow runtime (its
maintainers set TensorFlow aside, kubeflow/trainer#2699): there, TF_CONFIG would have to be
written by hand, so the TFJob is the engine used here.

`tfjob_manifest` renders the job; `create_and_wait` submits it through the Kubernetes API
(CustomObjectsApi, in-cluster credentials) and follows its conditions until it succeeds or fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kerasflow.runtime.errors import UserError

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "tfjobs", "TFJob"
CONTAINER = "tensorflow"
"""The container name the Training Operator looks for in a TFJob replica."""
WORKER_MODULE = "kerasflow.modeling.distribute"


def tfjob_manifest(
    *,
    name: str,
    namespace: str,
    image: str,
    workers: int,
    args: list[str],
    cpu: str = "2",
    memory: str = "4Gi",
    gpus: int = 0,
    service_account: str = "",
    backoff_limit: int = 3,
) -> dict[str, Any]:
    """The TFJob of `workers` replicas, each running `python -m kerasflow.modeling.distribute`.

    Args:
        name: The job's name (a DNS label).
        namespace: Where it runs.
        image: The kerasflow component image.
        workers: Worker replicas (TF_CONFIG's cluster), at least 2.
        args: The worker's arguments (`--splits URI ...`, see distribute.run_worker).
        cpu: CPU request and limit of each worker.
        memory: Memory request and limit of each worker.
        gpus: GPUs per worker (`nvidia.com/gpu`), 0 for none.
        service_account: The pods' service account ("" for the namespace's default).
        backoff_limit: Restarts of failed workers before the job fails.
    """
    if workers < 2:
        raise UserError(f"a TFJob of the final fit needs at least 2 workers, not {workers}")
    resources: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        resources["nvidia.com/gpu"] = str(gpus)
    container = {
        "name": CONTAINER,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", WORKER_MODULE],
        "args": list(args),
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "kerasflow"},
        },
        "spec": {
            "runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": backoff_limit},
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    # A worker that fails restarts and resumes from BackupAndRestore's state.
                    "restartPolicy": "OnFailure",
                    "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
                }
            },
        },
    }


def job_state(job: dict[str, Any]) -> str:
    """`Succeeded`, `Failed` or `Running` from a TFJob's status conditions."""
    for condition in reversed((job.get("status") or {}).get("conditions") or []):
        if condition.get("status") == "True" and condition.get("type") in ("Succeeded", "Failed"):
            return str(condition["type"])
    return "Running"


def create_and_wait(
    manifest: dict[str, Any],
    *,
    timeout_s: float,
    poll_s: float = 10.0,
    api: Any = None,
    on_poll: Callable[[str], None] | None = None,
) -> str:
    """Creates the TFJob through the Kubernetes API and waits for it to end.

    Returns:
        `Succeeded`.

    Raises:
        UserError: when the job fails, does not end within `timeout_s`, or the API refuses it.
    """
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    meta = manifest["metadata"]
    where = dict(group=GROUP, version=VERSION, namespace=meta["namespace"], plural=PLURAL)
    try:
        api.create_namespaced_custom_object(body=manifest, **where)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"TFJob {meta['name']} could not be created: {first}") from None
    deadline = time.monotonic() + timeout_s
    while True:
        job = api.get_namespaced_custom_object(name=meta["name"], **where)
        state = job_state(job)
        if on_poll is not None:
            on_poll(state)
        if state == "Succeeded":
            return state
        if state == "Failed":
            raise UserError(f"TFJob {meta['name']} failed (see its worker pods' logs)")
        if time.monotonic() >= deadline:
            raise UserError(f"TFJob {meta['name']} did not end within {timeout_s:.0f} s")
        time.sleep(poll_s)
