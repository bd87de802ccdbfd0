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
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from kerasflow.runtime.errors import UserError
from kerasflow.runtime.yaml_files import read_mapping
from kerasflow.settings import STEPS
from kerasflow.settings.base import TYPE_MESSAGES, Flag, Integer, Number, Text

POD_LABEL_KEY = "kerasflow.io/component"
"""Label put on every step's pod; k8s/ NetworkPolicies let pods with it reach MLflow."""

MLFLOW_CREDENTIALS_SECRET = "mlflow-client-credentials"
"""Secret (created by k8s/) whose username/password the steps send to the MLflow server."""

SHIPPED_MLFLOW_URI = "http://mlflow.kerasflow.svc.cluster.local:5000"
"""Tracking URI of the MLflow server that k8s/base runs (namespace `kerasflow`)."""

GPU_MEMORY_GROWTH_ENV = "TF_FORCE_GPU_ALLOW_GROWTH"
"""Set to "true" on GPU steps: TensorFlow then takes GPU memory as it needs it instead of all of
it at start, so the search chief, which builds models before it starts its trial workers, leaves
the GPU usable for them."""

_MERGED_KEYS = ("retry", "env", "node_selector")

_CPU = re.compile(r"^([0-9]*[.])?[0-9]+m?$")
_MEMORY = re.compile(r"^([0-9]*[.])?[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$")
_DURATION = re.compile(r"^[0-9]+(\.[0-9]+)?(s|m|h)?$")
_ROOT_SCHEMES = ("gs://", "s3://", "minio://", "https://", "http://")

# Baseline for every step. Retries cover pre-empted nodes and flaky object storage; the backoff
# keeps a struggling dependency (MLflow, GCS) from being hammered.
_BUILTIN_DEFAULTS: dict[str, Any] = {
    "env": {"MLFLOW_TRACKING_URI": SHIPPED_MLFLOW_URI},
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


def _quantity(pattern: re.Pattern[str], example: str) -> Any:
    def check(value: Any) -> str:
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or (value and not pattern.match(value)):
            raise ValueError(f"must be a quantity such as {example}")
        return value

    return BeforeValidator(check)


def _duration(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not _DURATION.match(value):
        raise ValueError('must be a duration such as "30s"')
    return value if value[-1] in "smh" else value + "s"


def _text_map(value: Any) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError("must be a mapping")
    out = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            raise ValueError(f"must map names to strings, got {item!r} for {key!r}")
        out[str(key)] = str(item)
    return out


def _step_name(value: Any) -> str:
    if value not in STEPS:
        raise ValueError(f"unknown step {value!r} (steps are: {', '.join(STEPS)})")
    return value


Cpu = Annotated[str, _quantity(_CPU, '"500m"')]
Memory = Annotated[str, _quantity(_MEMORY, '"4Gi"')]
Duration = Annotated[str, BeforeValidator(_duration)]
TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]
StepName = Annotated[str, BeforeValidator(_step_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RetrySettings(_Strict):
    """How a failed step is retried (maps onto `PipelineTask.set_retry`).

    Attributes:
        num_retries: Retries after the first failure; 0 turns retries off.
        backoff_duration: Wait before the first retry, e.g. "30s".
        backoff_factor: Multiplier applied to the wait after each retry.
        backoff_max_duration: Upper bound of the wait, e.g. "3600s".
    """

    num_retries: Integer = Field(0, ge=0)
    backoff_duration: Duration = "30s"
    backoff_factor: Number = Field(2.0, ge=1.0)
    backoff_max_duration: Duration = "3600s"


class Toleration(_Strict):
    """A Kubernetes toleration for a step's pod (maps onto `kfp.kubernetes.add_toleration`)."""

    key: Text = ""
    operator: Literal["Equal", "Exists"] = "Equal"
    value: Text = ""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    toleration_seconds: Integer | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _exists_takes_no_value(self) -> Toleration:
        if self.operator == "Exists" and self.value:
            raise ValueError("a toleration with operator Exists takes no value")
        return self


class SecretEnv(_Strict):
    """Keys of a Kubernetes Secret exposed to steps as environment variables.

    Attributes:
        secret_name: Name of the Secret in the run's namespace.
        env: Secret data key -> environment variable name.
        steps: Steps that get the variables; empty means every step.
        optional: When true, a missing Secret does not stop the pod from starting.
    """

    secret_name: Text
    env: TextMap = Field(min_length=1)
    steps: tuple[StepName, ...] = ()
    optional: Flag = False

    def applies_to(self, step: str) -> bool:
        """Whether this Secret is exposed to `step`."""
        return not self.steps or step in self.steps


class TaskSettings(_Strict):
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

    cpu_request: Cpu = ""
    cpu_limit: Cpu = ""
    memory_request: Memory = ""
    memory_limit: Memory = ""
    gpu: Integer = Field(0, ge=0)
    accelerator_type: Text = "nvidia.com/gpu"
    retry: RetrySettings = Field(default_factory=RetrySettings)
    caching: Flag = True
    node_selector: TextMap = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    env: TextMap = Field(default_factory=dict)
    timeout_seconds: Integer = Field(0, ge=0)
    image: Text = ""
    pvc_mounts: TextMap = Field(default_factory=dict)

    @field_validator("pvc_mounts")
    @classmethod
    def _absolute_mounts(cls, value: dict[str, str]) -> dict[str, str]:
        for claim, path in value.items():
            if not path.startswith("/"):
                raise ValueError(f"must mount {claim!r} at an absolute path, not {path!r}")
        return value


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


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        # Mappings merge key by key, so a file that adds one variable keeps the built-in ones.
        if key in _MERGED_KEYS and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_steps(
    user_defaults: Mapping[str, Any], user_steps: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The layered mappings of the defaults and of every step, not yet validated."""
    defaults = _merge(_BUILTIN_DEFAULTS, user_defaults)
    steps = {}
    for step in sorted(set(STEPS) | set(user_steps)):
        merged: dict[str, Any] = {}
        layers = (_BUILTIN_DEFAULTS, _BUILTIN_STEPS.get(step, {}), user_defaults)
        for layer in (*layers, user_steps.get(step) or {}):
            merged = _merge(merged, layer)
        steps[step] = merged
    return defaults, steps


class ClusterSettings(_Strict):
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

    pipeline_root: Text = ""
    image: Text = ""
    gpu_image: Text = ""
    service_account: Text = ""
    image_pull_secrets: list[Text] = Field(default_factory=list)
    gpu_node_selector: TextMap = Field(default_factory=dict)
    gpu_tolerations: list[Toleration] = Field(default_factory=_default_gpu_tolerations)
    secrets: list[SecretEnv] = Field(default_factory=_default_secrets)
    defaults: TaskSettings = Field(
        default_factory=lambda: TaskSettings(**_resolve_steps({}, {})[0])
    )
    steps: dict[StepName, TaskSettings] = Field(
        default_factory=lambda: {k: TaskSettings(**v) for k, v in _resolve_steps({}, {})[1].items()}
    )

    @field_validator("pipeline_root")
    @classmethod
    def _object_store_root(cls, value: str) -> str:
        if value and not value.startswith(_ROOT_SCHEMES):
            raise ValueError("must be an object-store URI such as gs://bucket/path")
        return value

    def for_step(self, step: str) -> TaskSettings:
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
                `steps` are mappings of `TaskSettings` keys, layered over the built-in values.
                None or {} gives the defaults.

        Returns:
            The validated settings.

        Raises:
            UserError: naming the first unknown key or bad value, with its place in the file.
        """
        if data is not None and not isinstance(data, Mapping):
            raise UserError("cluster settings must be a mapping of keys to values")
        data = dict(data or {})
        for key in ("defaults", "steps"):
            if data.get(key) is not None and not isinstance(data[key], Mapping):
                raise UserError(f"'{key}' must be a mapping, got {data[key]!r}")
        user_defaults = dict(data.pop("defaults", None) or {})
        user_steps = dict(data.pop("steps", None) or {})
        for step, values in user_steps.items():
            if step not in STEPS:
                raise UserError(
                    f"unknown step '{step}' in cluster settings (steps are: {', '.join(STEPS)})"
                )
            if values is not None and not isinstance(values, Mapping):
                raise UserError(f"'steps.{step}' must be a mapping, got {values!r}")
        defaults, steps = _resolve_steps(user_defaults, user_steps)
        # The defaults first, so a bad value there is named where it was written.
        resolved_defaults = _validate(TaskSettings, defaults, ("defaults",))
        resolved = {k: _validate(TaskSettings, v, ("steps", k)) for k, v in steps.items()}
        return _validate(cls, {**data, "defaults": resolved_defaults, "steps": resolved}, ())

    def with_image(self, image: str) -> ClusterSettings:
        """A copy whose steps all run in `image` (GPU steps too unless `gpu_image` is set)."""
        return self.model_copy(update={"image": image})


def _validate(model: type[BaseModel], data: Mapping[str, Any], where: tuple[str, ...]) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise UserError(_describe(model, exc, where)) from None


def _path(parts: list[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(model: type[BaseModel], exc: ValidationError, where: tuple[str, ...]) -> str:
    error = exc.errors()[0]
    loc = [*where, *error["loc"]]
    if error["type"] == "extra_forbidden":
        parent = _path(loc[:-1]) or "cluster settings"
        known = _known_keys(model, error["loc"][:-1])
        return f"unknown key '{loc[-1]}' in {parent}" + (f" (known: {known})" if known else "")
    if error["type"] == "missing" and loc[-1] in ("secret_name", "env"):
        return f"'{_path(loc[:-1])}' needs both 'secret_name' and 'env'"
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    message = message[0].lower() + message[1:] if message else message
    ctx = error.get("ctx") or {}
    if error["type"] in TYPE_MESSAGES:
        message = TYPE_MESSAGES[error["type"]]
    elif error["type"] == "greater_than_equal":
        message = f"must be >= {ctx.get('ge')}"
    elif error["type"] == "literal_error":
        message = f"must be one of {ctx.get('expected', '')}"
    elif error["type"] == "too_short" and loc[-1] == "env":
        message = "must map at least one Secret key to a variable name"
    value = error.get("input")
    if isinstance(value, Mapping) and error["type"] == "value_error":
        return f"'{_path(loc)}': {message}"  # a rule over several keys of one entry
    return f"'{_path(loc)}' {message}, got {value!r}"


def _known_keys(model: type[BaseModel], loc: tuple) -> str:
    # Walk the model along the error's location to list the keys allowed where it happened.
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        annotation = field.annotation if field else None
        args = getattr(annotation, "__args__", ()) or ()
        current = next((a for a in (annotation, *args) if hasattr(a, "model_fields")), None)
    return ", ".join(sorted(current.model_fields)) if current is not None else ""


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


def settings_for_cluster(config_path: str | None, image: str | None = None) -> ClusterSettings:
    """The settings `compile`, `submit` and `schedule` all compile with.

    Args:
        config_path: A cluster config file; empty or None gives the built-in settings.
        image: When given, every step runs in this image (as `with_image`).

    Raises:
        UserError: when the file is missing or holds an unknown key or bad value.
    """
    settings = load_cluster_settings(config_path)
    return settings.with_image(image) if image else settings


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
    env = dict(own.env)
    if own.gpu > 0:
        env.setdefault(GPU_MEMORY_GROWTH_ENV, "true")
    for name, value in sorted(env.items()):
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
