"""Cluster settings for the pipeline's steps: resources, retries, caching, scheduling, secrets.

`ClusterSettings` is what a cluster run needs beyond the pipeline parameters. It is read from a
YAML file (`kerasflow submit --cluster-config FILE`) with `ClusterSettings.from_mapping`, and the
DAG factory hands every task to `apply_step_settings` when it compiles for a cluster. Locally
(kfp.local) none of this applies, so the factory skips it there.

Settings resolve per step in layers, later ones winning key by key:
built-in defaults < built-in per-step values < the file's `defaults` < the file's `steps.<name>`.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from kerasflow.runtime.errors import UserError
from kerasflow.runtime.yaml_files import read_mapping
from kerasflow.settings import STEPS

POD_LABEL_KEY = "kerasflow.io/component"
"""Label put on every step's pod; k8s/ NetworkPolicies let pods with it reach MLflow."""

MLFLOW_CREDENTIALS_SECRET = "mlflow-client-credentials"
"""Secret (created by k8s/) whose username/password the steps send to the MLflow server."""

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^([0-9]*[.])?[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?(s|m|h)?$")
_ROOT_SCHEMES = ("gs://", "s3://", "minio://", "https://", "http://")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_TOLERATION_EFFECTS = ("", "NoSchedule", "PreferNoSchedule", "NoExecute")

# Baseline for every step. Retries cover pre-empted nodes and flaky object storage; the backoff
# keeps a struggling dependency (MLflow, GCS) from being hammered.
_BUILTIN_DEFAULTS: dict[str, Any] = {
    "cpu_request": "500m",
    "cpu_limit": "1",
    "memory_request": "1Gi",
    "memory_limit": "2Gi",
    "retry": {
        "num_retries": 2,
        "backoff_duration": "30s",
        "backoff_factor": 2.0,
        "backoff_max_duration": "3600s",
    },
}

# Sized for the default image and data scale; the search and training steps dominate.
# Deploy writes a new model version, a side effect that a cache hit would silently skip.
_BUILTIN_STEPS: dict[str, dict[str, Any]] = {
    "augment": {
        "cpu_request": "1",
        "cpu_limit": "2",
        "memory_request": "2Gi",
        "memory_limit": "4Gi",
    },
    "hyperparameter_search": {
        "cpu_request": "2",
        "cpu_limit": "4",
        "memory_request": "4Gi",
        "memory_limit": "8Gi",
    },
    "train": {"cpu_request": "2", "cpu_limit": "4", "memory_request": "4Gi", "memory_limit": "8Gi"},
    "evaluate": {
        "cpu_request": "1",
        "cpu_limit": "2",
        "memory_request": "2Gi",
        "memory_limit": "4Gi",
    },
    "deploy": {"caching": False, "retry": {"num_retries": 1}},
}


@dataclasses.dataclass
class RetrySettings:
    """How a failed step is retried (maps onto `PipelineTask.set_retry`).

    Attributes:
        num_retries: Retries after the first failure; 0 turns retries off.
        backoff_duration: Wait before the first retry, e.g. "30s".
        backoff_factor: Multiplier applied to the wait after each retry.
        backoff_max_duration: Upper bound of the wait, e.g. "3600s".
    """

    num_retries: int = 0
    backoff_duration: str = "30s"
    backoff_factor: float = 2.0
    backoff_max_duration: str = "3600s"


@dataclasses.dataclass
class Toleration:
    """A Kubernetes toleration for a step's pod (maps onto `kfp.kubernetes.add_toleration`)."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""
    toleration_seconds: int | None = None


@dataclasses.dataclass
class SecretEnv:
    """Keys of a Kubernetes Secret exposed to steps as environment variables.

    Attributes:
        secret_name: Name of the Secret in the run's namespace.
        env: Secret data key -> environment variable name.
        steps: Steps that get the variables; empty means every step.
        optional: When true, a missing Secret does not stop the pod from starting.
    """

    secret_name: str
    env: dict[str, str]
    steps: tuple[str, ...] = ()
    optional: bool = False

    def applies_to(self, step: str) -> bool:
        """Whether this Secret is exposed to `step`."""
        return not self.steps or step in self.steps


@dataclasses.dataclass
class StepSettings:
    """Everything set on one step's task when compiling for a cluster.

    Empty strings and zeros mean "not set": KFP and the cluster's defaults apply.

    Attributes:
        cpu_request: e.g. "500m" or "2".
        cpu_limit: e.g. "1".
        memory_request: e.g. "1Gi".
        memory_limit: e.g. "2Gi".
        gpu: Number of accelerators; above 0 makes this a GPU step.
        accelerator_type: Kubernetes resource name of the accelerator.
        retry: Retry policy.
        caching: Whether KFP may reuse a cached result of this step.
        node_selector: Node labels the pod must run on (GPU steps also get the global ones).
        tolerations: Taints the pod tolerates (GPU steps also get the global ones).
        env: Plain environment variables.
        timeout_seconds: Pod deadline (activeDeadlineSeconds); 0 means none.
        image: Image for this step only; overrides the global image.
        pvc_mounts: PersistentVolumeClaim name -> mount path, e.g. the model volume that
            TF Serving reads on a local cluster.
    """

    cpu_request: str = ""
    cpu_limit: str = ""
    memory_request: str = ""
    memory_limit: str = ""
    gpu: int = 0
    accelerator_type: str = "nvidia.com/gpu"
    retry: RetrySettings = dataclasses.field(default_factory=RetrySettings)
    caching: bool = True
    node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    tolerations: list[Toleration] = dataclasses.field(default_factory=list)
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    timeout_seconds: int = 0
    image: str = ""
    pvc_mounts: dict[str, str] = dataclasses.field(default_factory=dict)


def _default_secrets() -> list[SecretEnv]:
    return [
        SecretEnv(
            secret_name=MLFLOW_CREDENTIALS_SECRET,
            env={"username": "MLFLOW_TRACKING_USERNAME", "password": "MLFLOW_TRACKING_PASSWORD"},
        )
    ]


def _default_gpu_tolerations() -> list[Toleration]:
    # GKE taints every GPU node this way; without the toleration GPU steps never schedule.
    return [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


def _resolve_steps(
    user_defaults: Mapping[str, Any], user_steps: Mapping[str, Mapping[str, Any]]
) -> tuple[StepSettings, dict[str, StepSettings]]:
    defaults = _parse_step(_merge(_BUILTIN_DEFAULTS, user_defaults), "defaults")
    steps = {}
    for step in sorted(set(STEPS) | set(user_steps)):
        layers = (_BUILTIN_DEFAULTS, _BUILTIN_STEPS.get(step, {}), user_defaults)
        merged: dict[str, Any] = {}
        for layer in (*layers, user_steps.get(step, {})):
            merged = _merge(merged, layer)
        steps[step] = _parse_step(merged, f"steps.{step}")
    return defaults, steps


@dataclasses.dataclass
class ClusterSettings:
    """How the pipeline runs on a Kubernetes cluster with Kubeflow Pipelines.

    Build it with `ClusterSettings()` for the built-in defaults or `from_mapping` for a config
    file's contents. `for_step(name)` gives the resolved settings of one step.

    Attributes:
        pipeline_root: Where KFP stores artifacts, e.g. "gs://bucket/kfp"; empty: the server's.
        image: Component image for every step, e.g. "REGISTRY/kerasflow:TAG"; empty: the default.
        gpu_image: Image for steps with `gpu > 0` (the Dockerfile's `gpu` target); empty: `image`.
        service_account: Kubernetes ServiceAccount the run's pods use; empty: the server's.
        image_pull_secrets: Secrets for pulling from a private registry.
        gpu_node_selector: Node labels every GPU step must run on.
        gpu_tolerations: Tolerations added to every GPU step.
        secrets: Secrets exposed to steps as environment variables.
        defaults: Resolved settings of a step that `steps` does not name.
        steps: Resolved settings of each named step.
    """

    pipeline_root: str = ""
    image: str = ""
    gpu_image: str = ""
    service_account: str = ""
    image_pull_secrets: list[str] = dataclasses.field(default_factory=list)
    gpu_node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    gpu_tolerations: list[Toleration] = dataclasses.field(default_factory=_default_gpu_tolerations)
    secrets: list[SecretEnv] = dataclasses.field(default_factory=_default_secrets)
    defaults: StepSettings = dataclasses.field(default_factory=lambda: _resolve_steps({}, {})[0])
    steps: dict[str, StepSettings] = dataclasses.field(
        default_factory=lambda: _resolve_steps({}, {})[1]
    )

    def for_step(self, step: str) -> StepSettings:
        """The resolved settings of `step` (the defaults for a step not named in `steps`)."""
        return self.steps.get(step, self.defaults)

    def image_for(self, step: str) -> str:
        """The image `step` runs in, or "" to keep the component's own image."""
        own = self.for_step(step)
        if own.image:
            return own.image
        if own.gpu > 0 and self.gpu_image:
            return self.gpu_image
        return self.image

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> ClusterSettings:
        """Builds settings from a mapping such as a parsed YAML config file.

        Args:
            data: Top-level keys are the attributes of this class; `defaults` and each entry of
                `steps` are mappings of `StepSettings` keys. None or {} gives the defaults.

        Returns:
            The validated settings.

        Raises:
            UserError: naming the first unknown key or bad value.
        """
        if data is not None and not isinstance(data, Mapping):
            raise UserError("cluster settings must be a mapping of keys to values")
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        _check_keys(data, known, "cluster settings")
        user_defaults = _mapping(data.pop("defaults", None), "defaults")
        user_steps = _mapping(data.pop("steps", None), "steps")
        for step, values in user_steps.items():
            if step not in STEPS:
                raise UserError(
                    f"unknown step '{step}' in cluster settings (steps are: {', '.join(STEPS)})"
                )
            _mapping(values, f"steps.{step}")
        defaults, steps = _resolve_steps(user_defaults, user_steps)
        out = cls(defaults=defaults, steps=steps)
        for key in ("pipeline_root", "image", "gpu_image", "service_account"):
            if key in data:
                setattr(out, key, _string(data[key], key))
        if out.pipeline_root and not out.pipeline_root.startswith(_ROOT_SCHEMES):
            raise UserError(
                f"pipeline_root '{out.pipeline_root}' must be an object-store URI such as "
                "gs://bucket/path"
            )
        if "image_pull_secrets" in data:
            out.image_pull_secrets = [
                _string(v, "image_pull_secrets")
                for v in _list(data["image_pull_secrets"], "image_pull_secrets")
            ]
        if "gpu_node_selector" in data:
            out.gpu_node_selector = _string_map(data["gpu_node_selector"], "gpu_node_selector")
        if "gpu_tolerations" in data:
            out.gpu_tolerations = _parse_tolerations(data["gpu_tolerations"], "gpu_tolerations")
        if "secrets" in data:
            out.secrets = [
                _parse_secret(item, f"secrets[{i}]")
                for i, item in enumerate(_list(data["secrets"], "secrets"))
            ]
        return out

    def with_image(self, image: str) -> ClusterSettings:
        """A copy whose steps all run in `image` (GPU steps too unless `gpu_image` is set)."""
        return dataclasses.replace(self, image=image)


def load_cluster_settings(path: str | None) -> ClusterSettings:
    """Reads a YAML cluster config file; no path gives the defaults.

    Raises:
        UserError: when the file is missing, not YAML, or holds an unknown key or bad value.
    """
    if not path:
        return ClusterSettings()
    data = read_mapping(path, "cluster config file")
    try:
        return ClusterSettings.from_mapping(data)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def apply_step_settings(task: Any, step: str, settings: ClusterSettings) -> None:
    """Sets resources, retries, caching, scheduling, secrets and image on one pipeline task.

    The DAG factory calls this for every task when it compiles for a cluster. A step name that
    `settings.steps` does not know gets `settings.defaults`.

    Args:
        task: The `kfp.dsl.PipelineTask` returned by calling a component inside the pipeline.
        step: The step's name, e.g. "train".
        settings: The cluster settings.
    """
    from kfp import kubernetes

    own = settings.for_step(step)
    if own.cpu_request:
        task.set_cpu_request(own.cpu_request)
    if own.cpu_limit:
        task.set_cpu_limit(own.cpu_limit)
    if own.memory_request:
        task.set_memory_request(own.memory_request)
    if own.memory_limit:
        task.set_memory_limit(own.memory_limit)
    if own.gpu > 0:
        task.set_accelerator_type(own.accelerator_type)
        task.set_accelerator_limit(own.gpu)
    if own.retry.num_retries > 0:
        task.set_retry(
            num_retries=own.retry.num_retries,
            backoff_duration=own.retry.backoff_duration,
            backoff_factor=own.retry.backoff_factor,
            backoff_max_duration=own.retry.backoff_max_duration,
        )
    task.set_caching_options(enable_caching=own.caching)
    for name, value in sorted(own.env.items()):
        task.set_env_variable(name, value)
    image = settings.image_for(step)
    if image:
        task.set_container_image(image)

    node_selector = dict(settings.gpu_node_selector) if own.gpu > 0 else {}
    node_selector.update(own.node_selector)
    for key, value in sorted(node_selector.items()):
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    tolerations = (settings.gpu_tolerations if own.gpu > 0 else []) + own.tolerations
    for tol in tolerations:
        kubernetes.add_toleration(
            task,
            key=tol.key or None,
            operator=tol.operator,
            value=tol.value or None,
            effect=tol.effect or None,
            toleration_seconds=tol.toleration_seconds,
        )
    for secret in settings.secrets:
        if secret.applies_to(step):
            kubernetes.use_secret_as_env(
                task,
                secret_name=secret.secret_name,
                secret_key_to_env=dict(secret.env),
                optional=secret.optional,
            )
    if settings.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(settings.image_pull_secrets))
    if own.timeout_seconds > 0:
        kubernetes.set_timeout(task, own.timeout_seconds)
    for claim, path in sorted(own.pvc_mounts.items()):
        kubernetes.mount_pvc(task, pvc_name=claim, mount_path=path)
    kubernetes.add_pod_label(task, POD_LABEL_KEY, step.replace("_", "-"))


# --- parsing helpers -------------------------------------------------------------------------


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if key == "retry" and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _check_keys(data: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in data:
        if key not in known:
            raise UserError(f"unknown key '{key}' in {where} (known: {', '.join(sorted(known))})")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise UserError(f"'{where}' must be a mapping, got {value!r}")
    return dict(value)


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise UserError(f"'{where}' must be a list, got {value!r}")
    return list(value)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"'{where}' must be a string, got {value!r}")
    return value


def _string_map(value: Any, where: str) -> dict[str, str]:
    out = {}
    for key, item in _mapping(value, where).items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise UserError(f"'{where}.{key}' must be a string, got {item!r}")
        out[str(key)] = str(item)
    return out


def _int(value: Any, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserError(f"'{where}' must be an integer >= {low}, got {value!r}")
    return value


def _quantity(value: Any, where: str, pattern: re.Pattern[str], example: str) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or (text and not pattern.match(text)):
        raise UserError(f"'{where}' must be a quantity such as {example}, got {value!r}")
    return text


def _duration(value: Any, where: str) -> str:
    text = str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _DURATION.match(text):
        raise UserError(f"'{where}' must be a duration such as \"30s\", got {value!r}")
    return text if text[-1] in "smh" else text + "s"


def _parse_retry(value: Any, where: str) -> RetrySettings:
    data = _mapping(value, where)
    _check_keys(data, {f.name for f in dataclasses.fields(RetrySettings)}, where)
    out = RetrySettings()
    if "num_retries" in data:
        out.num_retries = _int(data["num_retries"], f"{where}.num_retries")
    if "backoff_duration" in data:
        out.backoff_duration = _duration(data["backoff_duration"], f"{where}.backoff_duration")
    if "backoff_factor" in data:
        factor = data["backoff_factor"]
        if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
            raise UserError(f"'{where}.backoff_factor' must be a number >= 1, got {factor!r}")
        out.backoff_factor = float(factor)
    if "backoff_max_duration" in data:
        out.backoff_max_duration = _duration(
            data["backoff_max_duration"], f"{where}.backoff_max_duration"
        )
    return out


def _parse_tolerations(value: Any, where: str) -> list[Toleration]:
    out = []
    for i, item in enumerate(_list(value, where)):
        here = f"{where}[{i}]"
        data = _mapping(item, here)
        _check_keys(data, {f.name for f in dataclasses.fields(Toleration)}, here)
        tol = Toleration(
            key=_string(data.get("key", ""), f"{here}.key"),
            operator=_string(data.get("operator", "Equal"), f"{here}.operator"),
            value=_string(data.get("value", ""), f"{here}.value"),
            effect=_string(data.get("effect", ""), f"{here}.effect"),
        )
        if data.get("toleration_seconds") is not None:
            tol.toleration_seconds = _int(data["toleration_seconds"], f"{here}.toleration_seconds")
        if tol.operator not in _TOLERATION_OPERATORS:
            raise UserError(f"'{here}.operator' must be Equal or Exists, got {tol.operator!r}")
        if tol.effect not in _TOLERATION_EFFECTS:
            choices = ", ".join(e for e in _TOLERATION_EFFECTS if e)
            raise UserError(f"'{here}.effect' must be one of {choices}, got {tol.effect!r}")
        if tol.operator == "Exists" and tol.value:
            raise UserError(f"'{here}': a toleration with operator Exists takes no value")
        out.append(tol)
    return out


def _parse_secret(value: Any, where: str) -> SecretEnv:
    data = _mapping(value, where)
    _check_keys(data, {f.name for f in dataclasses.fields(SecretEnv)}, where)
    if "secret_name" not in data or "env" not in data:
        raise UserError(f"'{where}' needs both 'secret_name' and 'env'")
    env = _string_map(data["env"], f"{where}.env")
    if not env:
        raise UserError(f"'{where}.env' must map at least one Secret key to a variable name")
    steps = tuple(_string(s, f"{where}.steps") for s in _list(data.get("steps"), f"{where}.steps"))
    for step in steps:
        if step not in STEPS:
            raise UserError(f"unknown step '{step}' in '{where}.steps'")
    optional = data.get("optional", False)
    if not isinstance(optional, bool):
        raise UserError(f"'{where}.optional' must be true or false, got {optional!r}")
    return SecretEnv(
        secret_name=_string(data["secret_name"], f"{where}.secret_name"),
        env=env,
        steps=steps,
        optional=optional,
    )


def _parse_step(data: Mapping[str, Any], where: str) -> StepSettings:
    _check_keys(data, {f.name for f in dataclasses.fields(StepSettings)}, where)
    out = StepSettings()
    for key, example in (("cpu_request", '"500m"'), ("cpu_limit", '"2"')):
        if key in data:
            setattr(out, key, _quantity(data[key], f"{where}.{key}", _CPU, example))
    for key in ("memory_request", "memory_limit"):
        if key in data:
            setattr(out, key, _quantity(data[key], f"{where}.{key}", _MEMORY, '"4Gi"'))
    if "gpu" in data:
        out.gpu = _int(data["gpu"], f"{where}.gpu")
    if "accelerator_type" in data:
        out.accelerator_type = _string(data["accelerator_type"], f"{where}.accelerator_type")
    if "retry" in data:
        out.retry = _parse_retry(data["retry"], f"{where}.retry")
    if "caching" in data:
        if not isinstance(data["caching"], bool):
            raise UserError(f"'{where}.caching' must be true or false, got {data['caching']!r}")
        out.caching = data["caching"]
    if "node_selector" in data:
        out.node_selector = _string_map(data["node_selector"], f"{where}.node_selector")
    if "tolerations" in data:
        out.tolerations = _parse_tolerations(data["tolerations"], f"{where}.tolerations")
    if "env" in data:
        out.env = _string_map(data["env"], f"{where}.env")
    if "timeout_seconds" in data:
        out.timeout_seconds = _int(data["timeout_seconds"], f"{where}.timeout_seconds")
    if "image" in data:
        out.image = _string(data["image"], f"{where}.image")
    if "pvc_mounts" in data:
        out.pvc_mounts = _string_map(data["pvc_mounts"], f"{where}.pvc_mounts")
        for claim, path in out.pvc_mounts.items():
            if not path.startswith("/"):
                raise UserError(
                    f"'{where}.pvc_mounts.{claim}' must be an absolute path, got {path!r}"
                )
    return out
