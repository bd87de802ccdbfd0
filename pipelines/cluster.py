"""Talking to a Kubeflow Pipelines server: connect, compile, submit, follow runs, schedules.

Everything here works on any pipeline function and any `kfp.Client`; the CLI layer
(`cluster_commands`) turns flags into these calls. Every failure a user can cause (bad host,
token, parameter, missing object on the server) ends as a one-line `UserError`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from kerasflow.runtime.errors import UserError

TOKEN_ENV_VARS = ("KERASFLOW_KFP_TOKEN", "KF_PIPELINES_TOKEN")
"""Environment variables read for a bearer token, first one set wins."""

IAP_SECRET_ENV_VAR = "KERASFLOW_IAP_CLIENT_SECRET"
"""Environment variable read for --iap-other-client-secret."""

HOST_ENV_VAR = "KF_PIPELINES_ENDPOINT"
"""Environment variable read for the server URL when no --host is given (as kfp.Client does)."""

SUCCEEDED = "SUCCEEDED"
FINISHED_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})

_HEALTHZ_TIMEOUT_S = 15
_STATUS_HINTS = {
    401: "check --token, --token-file or $KF_PIPELINES_TOKEN",
    403: "the token's identity may not use this namespace; check --namespace",
    404: "check --host (the Kubeflow Pipelines URL) and the name or id",
}


# --- connection and errors ---------------------------------------------------------------


def resolve_token(
    token: str | None, token_file: str | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Picks the bearer token: --token, else --token-file, else the first env var set.

    Raises:
        UserError: when the token file is missing or empty.
    """
    if token:
        return token.strip()
    if token_file:
        path = Path(token_file).expanduser()
        if not path.is_file():
            raise UserError(f"token file not found: {token_file}")
        text = path.read_text().strip()
        if not text:
            raise UserError(f"token file is empty: {token_file}")
        return text
    env = os.environ if environ is None else environ
    for name in TOKEN_ENV_VARS:
        if env.get(name, "").strip():
            return env[name].strip()
    return None


def resolve_host(host: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The server URL from --host or $KF_PIPELINES_ENDPOINT, without a trailing slash.

    Raises:
        UserError: when neither is set or the value is not an http(s) URL.
    """
    env = os.environ if environ is None else environ
    value = (host or env.get(HOST_ENV_VAR, "")).strip()
    if not value:
        raise UserError(f"no Kubeflow Pipelines URL: pass --host or set {HOST_ENV_VAR}")
    if not value.startswith(("http://", "https://")):
        raise UserError(f"--host must be an http:// or https:// URL, got '{value}'")
    return value.rstrip("/")


def _body_message(body: Any) -> str:
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not isinstance(body, str) or not body.strip():
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        first = body.strip().splitlines()[0]
        # An HTML page (login redirect, proxy error) says nothing a user can act on.
        return "" if first.lstrip().startswith("<") else first[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or "").splitlines()[0][:300]
    return ""


def _network_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    text = str(reason).splitlines()[0] if str(reason) else type(exc).__name__
    # urllib3 nests the cause: "HTTPConnection(...): Failed to establish ...: [Errno 111] ..."
    return text.rsplit("): ", 1)[-1]


@contextlib.contextmanager
def api_errors(host: str, action: str) -> Iterator[None]:
    """Turns what the KFP client raises into one-line UserErrors.

    Args:
        host: The server URL, named in messages.
        action: What was being done, e.g. "create the run".
    """
    import kfp_server_api
    import urllib3

    try:
        yield
    except kfp_server_api.ApiException as exc:
        status = exc.status or 0
        if status == 0:
            raise UserError(f"cannot reach Kubeflow Pipelines at {host}: {exc.reason}") from None
        detail = _body_message(exc.body) or (exc.reason or "")
        message = f"Kubeflow Pipelines at {host} could not {action}: HTTP {status}"
        if detail:
            message += f" {detail}"
        hint = _STATUS_HINTS.get(status)
        if hint:
            message += f" ({hint})"
        raise UserError(message) from None
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise UserError(
            f"cannot reach Kubeflow Pipelines at {host}: {_network_reason(exc)}"
        ) from None
    except ValueError as exc:
        # kfp.Client reports lookups it cannot resolve (e.g. two experiments share a name) so.
        raise UserError(f"could not {action}: {str(exc).splitlines()[0]}") from None


def check_server(host: str, token: str | None) -> None:
    """Asks the server's healthz endpoint once, so a bad host or token fails fast.

    kfp.Client itself retries a failing healthz call for about half a minute before
    giving up with a generic error.

    Raises:
        UserError: when the server cannot be reached or refuses the request.
    """
    import kfp_server_api

    config = kfp_server_api.Configuration(host=host)
    if token:
        config.api_key["authorization"] = token
        config.api_key_prefix["authorization"] = "Bearer"
    # One answer is enough to judge the host; urllib3's own retries only delay the message.
    config.retries = 0
    with kfp_server_api.ApiClient(config) as api_client:
        api = kfp_server_api.HealthzServiceApi(api_client)
        with api_errors(host, "answer a health check"):
            api.healthz_service_get_healthz(_request_timeout=_HEALTHZ_TIMEOUT_S)


@dataclasses.dataclass(frozen=True)
class IapLogin:
    """kfp.Client's Identity-Aware Proxy login (Kubeflow on GKE behind IAP).

    Attributes:
        client_id: OAuth client id of the IAP-protected backend; the ID token's audience.
        other_client_id: A desktop OAuth client id, for a user login in the browser; empty for
            a service account (Application Default Credentials).
        other_client_secret: That desktop client's secret.
    """

    client_id: str
    other_client_id: str = ""
    other_client_secret: str = ""

    def client_kwargs(self) -> dict[str, Any]:
        """The keyword arguments kfp.Client takes for this login."""
        return {
            "client_id": self.client_id,
            "other_client_id": self.other_client_id or None,
            "other_client_secret": self.other_client_secret or None,
        }


def resolve_iap_login(
    client_id: str | None,
    other_client_id: str | None,
    other_client_secret: str | None,
    environ: Mapping[str, str] | None = None,
) -> IapLogin | None:
    """The IAP login from --iap-client-id and friends; None without --iap-client-id.

    The desktop client's secret may come from $KERASFLOW_IAP_CLIENT_SECRET, off the command line.

    Raises:
        UserError: when the desktop client id and secret are not given together, or are given
            without --iap-client-id.
    """
    env = os.environ if environ is None else environ
    secret = (other_client_secret or env.get(IAP_SECRET_ENV_VAR, "")).strip()
    other = (other_client_id or "").strip()
    if not (client_id or "").strip():
        if other or other_client_secret:
            raise UserError("--iap-other-client-id/-secret need --iap-client-id")
        return None
    if bool(other) != bool(secret):
        raise UserError(
            "--iap-other-client-id and its secret (--iap-other-client-secret or "
            f"${IAP_SECRET_ENV_VAR}) go together"
        )
    return IapLogin(client_id.strip(), other, secret)


def iap_token(login: IapLogin, get_token: Callable[..., Any] | None = None) -> str:
    """An ID token whose audience is the IAP client id, as kfp.Client gets it.

    Args:
        login: The IAP login.
        get_token: kfp's `auth.get_auth_token` (the default) or a stand-in with its signature.

    Raises:
        UserError: when no token can be had (no credentials, refused login).
    """
    if get_token is None:
        from kfp.client import auth

        get_token = auth.get_auth_token
    try:
        token, _ = get_token(
            login.client_id, login.other_client_id or None, login.other_client_secret or None
        )
    except Exception as exc:  # google-auth and oauthlib raise many kinds
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"IAP login for client id {login.client_id} failed: {reason}") from None
    if not token:
        raise UserError(
            f"IAP login for client id {login.client_id} gave no token: run `gcloud auth "
            "application-default login` or pass --iap-other-client-id for a browser login"
        )
    return token


def connect(
    host: str,
    token: str | None = None,
    namespace: str | None = None,
    iap: IapLogin | None = None,
    get_iap_token: Callable[..., Any] | None = None,
) -> Any:
    """Returns a `kfp.Client` for `host` after checking that the server answers.

    Args:
        host: Kubeflow Pipelines URL, e.g. https://kubeflow.example.com/pipeline.
        token: Bearer token sent with every request (kfp.Client's existing_token).
        namespace: Kubernetes namespace for multi-user deployments.
        iap: Identity-Aware Proxy login; kfp.Client then fetches (and refreshes) the ID token.
        get_iap_token: Stand-in for kfp's `auth.get_auth_token` (tests).

    Raises:
        UserError: when the server cannot be reached or refuses the token.
    """
    import kfp

    if iap is not None and token:
        raise UserError("give either a bearer token or --iap-client-id, not both")
    # The health check goes through the same proxy as every later call, so it carries the token.
    check_token = iap_token(iap, get_iap_token) if iap is not None else token
    check_server(host, check_token)
    kwargs: dict[str, Any] = {"host": host}
    if iap is not None:
        kwargs.update(iap.client_kwargs())
    else:
        kwargs["existing_token"] = token
    if namespace:
        kwargs["namespace"] = namespace
    with warnings.catch_warnings(), api_errors(host, "connect"):
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(**kwargs)


# --- pipelines and parameters ------------------------------------------------------------


def read_package(package_path: str | Path) -> dict[str, Any]:
    """The pipeline spec (first YAML document) of a compiled package."""
    with open(package_path) as f:
        return next(yaml.safe_load_all(f))


def declared_parameters(package_path: str | Path) -> dict[str, str]:
    """Pipeline parameter names and their KFP types (STRING, NUMBER_INTEGER, ...)."""
    spec = read_package(package_path)
    params = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    return {name: p.get("parameterType", "STRING") for name, p in params.items()}


_OBJECT_STORES = ("gs://", "s3://", "minio://")
_URI = re.compile(r"^(gs|s3|minio)://[a-z0-9][a-z0-9._-]{1,220}[a-z0-9](/.*)?$")


def _remote_path_problem(value: str) -> str:
    """Why `value` cannot be a path that pods on a cluster share, or ""."""
    if value.startswith(_OBJECT_STORES):
        if not _URI.match(value):
            return "is not a valid object-store URI (SCHEME://BUCKET/PATH)"
        return ""
    if "://" in value:
        return "must be gs://, s3://, minio:// or an absolute path on a mounted volume"
    if not value.startswith("/"):
        return "is a path on this machine, which pods on a cluster cannot read"
    return ""


def check_cluster_arguments(params: Mapping[str, Any], package_path: str | Path) -> None:
    """Checks what a run on a cluster needs and a user can get wrong, before it is created.

    KFP retries a failed step whatever made it fail, so a bad argument found by a step costs
    every retry and its backoff; these checks fail at once instead. `params` are the run's
    arguments; a parameter they do not set takes the package's default.

    Raises:
        UserError: naming the parameter and what is wrong with it.
    """
    spec = read_package(package_path)
    declared = spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    values = {name: p.get("defaultValue") for name, p in declared.items()}
    values.update(params)
    if "serving_dir" in declared:
        serving_dir = str(values.get("serving_dir") or "").strip()
        if not serving_dir:
            raise UserError(
                "serving_dir is empty: pass --param serving_dir=gs://BUCKET/models (the folder "
                "TF Serving reads models.config and model versions from)"
            )
        problem = _remote_path_problem(serving_dir)
        if problem:
            raise UserError(f"serving_dir '{serving_dir}' {problem}")
    if "data" in declared:
        data = str(values.get("data") or "").strip()
        if not data.startswith(("builtin:", "http://", "https://")):
            problem = _remote_path_problem(data) if data else "is empty"
            if problem:
                raise UserError(f"data '{data}' {problem}")
    tracking_uri = str(values.get("tracking_uri") or "").strip()
    if tracking_uri and not tracking_uri.startswith(("http://", "https://")):
        raise UserError(
            f"tracking_uri '{tracking_uri}' must be the http(s):// URL of an MLflow server that "
            "pods can reach (empty: the steps' MLFLOW_TRACKING_URI)"
        )
    if "model_name" in declared and not str(values.get("model_name") or "").strip():
        raise UserError("model_name is empty: TF Serving needs a model name")


def _coerce(name: str, raw: str, kind: str) -> Any:
    try:
        if kind == "NUMBER_INTEGER":
            return int(raw)
        if kind == "NUMBER_DOUBLE":
            return float(raw)
        if kind == "BOOLEAN":
            lowered = raw.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if kind in ("STRUCT", "LIST"):
            value = json.loads(raw)
            if not isinstance(value, dict if kind == "STRUCT" else list):
                raise ValueError
            return value
    except ValueError:
        expected = {
            "NUMBER_INTEGER": "an integer",
            "NUMBER_DOUBLE": "a number",
            "BOOLEAN": "true or false",
            "STRUCT": 'a JSON object such as {"accuracy": 0.9}',
            "LIST": "a JSON list",
        }[kind]
        raise UserError(f"parameter '{name}' must be {expected}, got '{raw}'") from None
    return raw


def parse_params(items: list[str] | None, declared: Mapping[str, str]) -> dict[str, Any]:
    """Turns `key=value` strings into typed pipeline arguments, checked as a run would be.

    Values are converted to each parameter's declared type. A setting's key that is no longer a
    parameter of its own (`augment_factor=2`, from before the settings structures) goes into
    its step's structure, with a warning. The result is validated like `kerasflow run`'s
    settings, so a bad value fails here rather than in a step on the cluster.

    Raises:
        UserError: for a malformed item, an unknown parameter or a bad value.
    """
    from kerasflow.settings import RunSettings
    from kerasflow.settings.run import field_of, fold_flat_parameters, step_of_keys

    out: dict[str, Any] = {}
    settings_keys = step_of_keys()
    for item in items or []:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UserError(f"--param '{item}' is not of the form key=value")
        if name in declared:
            out[name] = _coerce(name, raw, declared[name])
        elif name in settings_keys:
            out[name] = _coerce(name, raw, _kfp_type(field_of(name)[1].annotation))
        else:
            known = ", ".join(sorted(declared)) or "none"
            raise UserError(f"unknown pipeline parameter '{name}' (parameters: {known})")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FutureWarning)
        out = fold_flat_parameters(out, declared)
    for warning in caught:
        print(f"kerasflow: warning: {warning.message}", file=sys.stderr)
    RunSettings.from_pipeline_arguments(out)
    return out


def _kfp_type(annotation: Any) -> str:
    if annotation is bool:
        return "BOOLEAN"
    if annotation is int:
        return "NUMBER_INTEGER"
    if annotation is float:
        return "NUMBER_DOUBLE"
    if getattr(annotation, "__origin__", annotation) is dict:
        return "STRUCT"
    return "STRING"


# --- runs --------------------------------------------------------------------------------


def submit_run(
    client: Any,
    host: str,
    package_path: str | Path,
    *,
    experiment: str,
    run_name: str,
    params: Mapping[str, Any],
    pipeline_root: str = "",
    service_account: str = "",
    namespace: str | None = None,
) -> str:
    """Creates a run of a compiled pipeline and returns its id.

    Raises:
        UserError: when the server refuses or cannot be reached.
    """
    with api_errors(host, "create the run"):
        result = client.create_run_from_pipeline_package(
            str(package_path),
            arguments=dict(params),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace or None,
            pipeline_root=pipeline_root or None,
            service_account=service_account or None,
        )
    return result.run_id


def _visible_tasks(run: Any) -> list[Any]:
    details = getattr(run, "run_details", None)
    tasks = getattr(details, "task_details", None) or []
    # KFP also reports its own bookkeeping tasks (the root DAG, per-task drivers).
    return [
        t
        for t in tasks
        if t.display_name and t.display_name != "root" and not t.display_name.endswith("-driver")
    ]


def describe_run(run: Any) -> str:
    """One line: the run's state and how far its tasks are."""
    state = run.state or "PENDING"
    tasks = _visible_tasks(run)
    if not tasks:
        return state
    done = [t for t in tasks if t.state in FINISHED_STATES]
    running = sorted(t.display_name for t in tasks if t.state == "RUNNING")
    failed = sorted(t.display_name for t in tasks if t.state == "FAILED")
    text = f"{state} ({len(done)}/{len(tasks)} tasks done"
    if running:
        text += f"; running: {', '.join(running)}"
    if failed:
        text += f"; failed: {', '.join(failed)}"
    return text + ")"


def follow_run(
    client: Any,
    host: str,
    run_id: str,
    *,
    timeout_s: float,
    poll_interval_s: float = 10.0,
    echo: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """Polls a run until it finishes, printing a line whenever its progress changes.

    Returns:
        The finished run (`V2beta1Run`).

    Raises:
        UserError: when the server fails or the run is still going after `timeout_s`.
    """
    start = clock()
    last = ""
    while True:
        with api_errors(host, f"get run {run_id}"):
            run = client.get_run(run_id)
        line = describe_run(run)
        if line != last:
            echo(f"[{clock() - start:6.0f}s] run {run_id}: {line}")
            last = line
        if run.state in FINISHED_STATES:
            return run
        if clock() - start >= timeout_s:
            raise UserError(
                f"run {run_id} is still {run.state} after {timeout_s:.0f}s; "
                "it keeps running on the cluster"
            )
        sleep(poll_interval_s)


def run_error(run: Any) -> str:
    """The server's error message for a finished run, or ""."""
    error = getattr(run, "error", None)
    message = getattr(error, "message", None) if error is not None else None
    return str(message).splitlines()[0] if message else ""


# --- recurring runs ----------------------------------------------------------------------


# KFP's ScheduledWorkflow parses with robfig/cron: six fields, seconds first; names for months
# and weekdays; `?` in the day fields; no `L`, `W` or `#`.
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_CRON_FIELDS = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 6, ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]),
)


def _cron_value(text: str, low: int, names: tuple[str, ...] | list[str]) -> int | None:
    if text.isdigit():
        return int(text)
    upper = text.upper()
    return names.index(upper) + low if upper in names else None


def _cron_field_problem(text: str, field: tuple[str, int, int, Any]) -> str:
    """Why `text` is not a valid value of `field`, or ""."""
    name, low, high, names = field
    for part in text.split(","):
        base, slash, step = part.partition("/")
        if slash and not (step.isdigit() and int(step) > 0):
            return f"the {name} field has a bad step '{part}'"
        if base in ("*", "?"):
            if base == "?" and name not in ("day of month", "day of week"):
                return f"'?' is only allowed in the day fields, not the {name} field"
            continue
        bounds = base.split("-")
        if len(bounds) > 2 or not all(bounds):
            return f"the {name} field has a bad value '{part}'"
        values = [_cron_value(b, low, names) for b in bounds]
        if any(v is None or not low <= v <= high for v in values):
            return f"the {name} field must lie in {low}-{high}, got '{part}'"
        if len(values) == 2 and values[0] > values[1]:
            return f"the {name} field has a backwards range '{part}'"
    return ""


def to_kfp_cron(expression: str) -> str:
    """Converts a cron expression to KFP's 6-field form (seconds first) after checking it.

    A 5-field expression (minute hour day month weekday) gets second 0 in front; a 6-field one
    passes through. Every field is checked against KFP's cron parser, so a bad expression fails
    here rather than after the recurring run is created.

    Raises:
        UserError: naming the first field that is wrong.
    """
    fields = expression.split()
    usage = (
        '5 fields (minute hour day month weekday), e.g. "0 3 * * *", or KFP\'s 6 with seconds first'
    )
    if len(fields) not in (5, 6):
        raise UserError(f"--cron '{expression}' is not a cron expression of {usage}")
    if len(fields) == 5:
        fields = ["0", *fields]
    for text, field in zip(fields, _CRON_FIELDS, strict=True):
        problem = _cron_field_problem(text, field)
        if problem:
            raise UserError(f"--cron '{expression}': {problem}")
    return " ".join(fields)


def create_schedule(
    client: Any,
    host: str,
    package_path: str | Path,
    *,
    experiment: str,
    name: str,
    cron: str,
    params: Mapping[str, Any],
    max_concurrency: int = 1,
    no_catchup: bool = False,
    pipeline_root: str = "",
    service_account: str = "",
    namespace: str | None = None,
) -> Any:
    """Creates an enabled recurring run of a compiled pipeline.

    Raises:
        UserError: for a bad cron expression or concurrency, or when the server refuses.
    """
    if max_concurrency < 1:
        raise UserError(f"--max-concurrency must be at least 1, got {max_concurrency}")
    kfp_cron = to_kfp_cron(cron)
    with api_errors(host, "find or create the experiment"):
        exp = client.create_experiment(name=experiment, namespace=namespace or None)
    with api_errors(host, "create the recurring run"):
        return client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=name,
            cron_expression=kfp_cron,
            max_concurrency=max_concurrency,
            no_catchup=no_catchup,
            params=dict(params),
            pipeline_package_path=str(package_path),
            enabled=True,
            pipeline_root=pipeline_root or None,
            service_account=service_account or None,
        )


def list_schedules(client: Any, host: str, namespace: str | None = None) -> list[Any]:
    """Every recurring run the server shows (all pages)."""
    import kfp_server_api

    found: list[Any] = []
    token = ""
    with api_errors(host, "list recurring runs"):
        while True:
            try:
                page = client.list_recurring_runs(
                    page_token=token, page_size=100, namespace=namespace or None
                )
            except kfp_server_api.ApiException as exc:
                if not namespace and exc.status in (400, 403, 404):
                    # Multi-user Kubeflow keeps recurring runs per profile namespace.
                    raise UserError(
                        f"Kubeflow Pipelines at {host} lists recurring runs per namespace: "
                        f"pass --namespace (HTTP {exc.status})"
                    ) from None
                raise
            found.extend(page.recurring_runs or [])
            token = page.next_page_token or ""
            if not token:
                return found


def find_schedule(client: Any, host: str, name_or_id: str, namespace: str | None = None) -> Any:
    """The recurring run whose id or display name is `name_or_id`.

    Raises:
        UserError: when none matches, or several share the name.
    """
    schedules = list_schedules(client, host, namespace)
    for rr in schedules:
        if rr.recurring_run_id == name_or_id:
            return rr
    named = [rr for rr in schedules if rr.display_name == name_or_id]
    if not named:
        raise UserError(f"no recurring run with id or name '{name_or_id}' at {host}")
    if len(named) > 1:
        ids = ", ".join(rr.recurring_run_id for rr in named)
        raise UserError(f"several recurring runs are named '{name_or_id}' ({ids}); pass an id")
    return named[0]


def set_schedule_enabled(client: Any, host: str, recurring_run_id: str, enabled: bool) -> None:
    """Resumes (enabled=True) or pauses a recurring run."""
    action = "resume" if enabled else "pause"
    with api_errors(host, f"{action} recurring run {recurring_run_id}"):
        if enabled:
            client.enable_recurring_run(recurring_run_id)
        else:
            client.disable_recurring_run(recurring_run_id)


def delete_schedule(client: Any, host: str, recurring_run_id: str) -> None:
    """Deletes a recurring run (runs it already started are kept)."""
    with api_errors(host, f"delete recurring run {recurring_run_id}"):
        client.delete_recurring_run(recurring_run_id)


def schedule_row(rr: Any) -> dict[str, str]:
    """The columns `kerasflow schedule --list` prints for one recurring run."""
    trigger = getattr(rr, "trigger", None)
    cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None)
    periodic = getattr(getattr(trigger, "periodic_schedule", None), "interval_second", None)
    when = cron or (f"every {periodic}s" if periodic else "-")
    return {
        "id": rr.recurring_run_id or "",
        "name": rr.display_name or "",
        "status": rr.status or "",
        "schedule": when,
        "max_concurrency": str(rr.max_concurrency or ""),
        "catchup": "no" if rr.no_catchup else "yes",
    }
