"""A local stand-in of the Kubeflow Pipelines v2 REST API, for driving the real kfp.Client.

`KfpApiStub` serves on 127.0.0.1 (a free port) the endpoints kfp.Client calls when it creates
experiments, runs and recurring runs, and records every request it receives. Runs advance one
state per GET so `--wait` can be followed to the end. It can demand a bearer token and can answer
chosen requests with an error status.

`build_standin_pipeline` is a seven-step pipeline with the training DAG's task names and a few of
its parameters, for tests that must not depend on the real DAG.
"""

import dataclasses
import datetime
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/v2beta1"


@dataclasses.dataclass
class RecordedRequest:
    """One request the stub received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    def header(self, name: str) -> str:
        """A header's value by case-insensitive name ("" when absent)."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""


@dataclasses.dataclass
class _Failure:
    status: int
    method: str
    path_prefix: str
    message: str


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_task_names(pipeline_spec: Any) -> list[str]:
    """Task names of an inline pipeline spec, sub-DAGs (conditions, loops) included."""
    if not isinstance(pipeline_spec, dict):
        return []
    spec = pipeline_spec.get("pipeline_spec", pipeline_spec)
    dags = [spec.get("root", {}).get("dag", {})]
    dags += [c.get("dag", {}) for c in spec.get("components", {}).values()]
    names = []
    for dag in dags:
        for name, task in dag.get("tasks", {}).items():
            if not task.get("componentRef", {}).get("name", "").startswith("comp-condition"):
                names.append(name)
    return sorted(set(names))


class KfpApiStub:
    """An in-process HTTP server answering like the KFP v2beta1 API.

    Args:
        token: When set, every request must carry `Authorization: Bearer <token>` or gets 401.
        run_states: States a run passes through, one per GET of the run; the last one sticks.
    """

    def __init__(
        self,
        token: str | None = None,
        run_states: tuple[str, ...] = ("PENDING", "RUNNING", "SUCCEEDED"),
    ) -> None:
        self.token = token
        self.run_states = run_states
        self.requests: list[RecordedRequest] = []
        self.experiments: dict[str, dict[str, Any]] = {}
        self.runs: dict[str, dict[str, Any]] = {}
        self.recurring_runs: dict[str, dict[str, Any]] = {}
        self._run_polls: dict[str, int] = {}
        self._failures: list[_Failure] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Base URL to pass as `--host`."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "KfpApiStub":
        """Starts serving in a daemon thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stops serving and frees the port."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> "KfpApiStub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls -------------------------------------------------------------------

    def fail(self, status: int, method: str = "", path: str = "", message: str = "") -> None:
        """Answers matching requests with `status` from now on.

        Args:
            status: HTTP status to return, e.g. 404 or 500.
            method: Only this HTTP method ("" for any).
            path: Only paths starting with this, relative to /apis/v2beta1 ("" for any).
            message: Error message in the body.
        """
        text = message or f"stub failure {status}"
        self._failures.append(_Failure(status, method.upper(), PREFIX + path, text))

    def add_experiment(self, name: str, namespace: str = "") -> str:
        """Creates an experiment directly and returns its id."""
        exp_id = str(uuid.uuid4())
        self.experiments[exp_id] = {
            "experiment_id": exp_id,
            "display_name": name,
            "namespace": namespace,
            "created_at": _now(),
            "storage_state": "AVAILABLE",
        }
        return exp_id

    def find(self, method: str, path: str) -> list[RecordedRequest]:
        """Recorded requests with this method whose path (relative to /apis/v2beta1) matches."""
        return [r for r in self.requests if r.method == method and r.path == PREFIX + path]

    # --- request handling ----------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                try:
                    body: Any = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                request = RecordedRequest(
                    method=self.command,
                    path=parts.path,
                    query=parse_qs(parts.query),
                    headers=dict(self.headers.items()),
                    body=body,
                )
                with stub._lock:
                    stub.requests.append(request)
                    status, payload = stub._answer(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        return Handler

    @staticmethod
    def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
        codes = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6, 500: 13, 503: 14}
        return status, {"error": message, "code": codes.get(status, 2), "message": message}

    def _answer(self, req: RecordedRequest) -> tuple[int, Any]:
        if self.token is not None and req.header("Authorization") != f"Bearer {self.token}":
            return self._error(401, "Unauthenticated: missing or invalid bearer token")
        for failure in self._failures:
            if (not failure.method or failure.method == req.method) and req.path.startswith(
                failure.path_prefix
            ):
                return self._error(failure.status, failure.message)
        if not req.path.startswith(PREFIX + "/"):
            return self._error(404, f"no route for {req.path}")
        path = req.path[len(PREFIX) :]
        route = (req.method, path.split("/")[1] if "/" in path else path)
        handlers = {
            ("GET", "healthz"): self._healthz,
            ("GET", "experiments"): self._experiments_get,
            ("POST", "experiments"): self._experiments_create,
            ("POST", "runs"): self._runs_create,
            ("GET", "runs"): self._runs_get,
            ("POST", "recurringruns"): self._recurring_post,
            ("GET", "recurringruns"): self._recurring_get,
            ("DELETE", "recurringruns"): self._recurring_delete,
        }
        handler = handlers.get(route)
        if handler is None:
            return self._error(404, f"no route for {req.method} {req.path}")
        rest = path.split("/")[2:]
        return handler(req, rest)

    def _healthz(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        return 200, {"commit_sha": "stub", "tag_name": "2.5.0-stub", "multi_user": False}

    def _experiments_get(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        if rest:
            exp = self.experiments.get(rest[0])
            return (200, exp) if exp else self._error(404, f"experiment {rest[0]} not found")
        found = list(self.experiments.values())
        for raw in req.query.get("filter", []):
            for pred in json.loads(raw).get("predicates", []):
                if pred.get("key") == "display_name":
                    found = [e for e in found if e["display_name"] == pred.get("stringValue")]
        return 200, {"experiments": found, "total_size": len(found)}

    def _experiments_create(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        body = req.body or {}
        if not body.get("display_name"):
            return self._error(400, "experiment display_name is required")
        exp_id = self.add_experiment(body["display_name"], body.get("namespace") or "")
        return 200, self.experiments[exp_id]

    def _runs_create(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        body = dict(req.body or {})
        if body.get("experiment_id") not in self.experiments:
            return self._error(404, f"experiment {body.get('experiment_id')} not found")
        if not body.get("pipeline_spec") and not body.get("pipeline_version_reference"):
            return self._error(400, "a run needs a pipeline_spec or a pipeline version")
        run_id = str(uuid.uuid4())
        body.update(run_id=run_id, state=self.run_states[0], created_at=_now())
        self.runs[run_id] = body
        self._run_polls[run_id] = 0
        return 200, body

    def _runs_get(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        if not rest:
            return 200, {"runs": list(self.runs.values()), "total_size": len(self.runs)}
        run = self.runs.get(rest[0])
        if run is None:
            return self._error(404, f"run {rest[0]} not found")
        polls = self._run_polls[rest[0]] = self._run_polls[rest[0]] + 1
        state = self.run_states[min(polls, len(self.run_states) - 1)]
        run["state"] = state
        tasks = _spec_task_names(run.get("pipeline_spec"))
        done = state in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")
        finished = len(tasks) if done else min(polls, len(tasks))
        details = []
        for i, name in enumerate(tasks):
            if i < finished:
                task_state = "FAILED" if state == "FAILED" and i == finished - 1 else "SUCCEEDED"
            elif i == finished and state == "RUNNING":
                task_state = "RUNNING"
            else:
                task_state = "PENDING"
            details.append({"display_name": name, "task_id": f"{rest[0]}-{i}", "state": task_state})
        run["run_details"] = {"task_details": details}
        if state == "FAILED":
            run["error"] = {"code": 2, "message": "stub: a task failed"}
        return 200, run

    def _recurring_post(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        if not rest:
            body = dict(req.body or {})
            if body.get("experiment_id") not in self.experiments:
                return self._error(404, f"experiment {body.get('experiment_id')} not found")
            rr_id = str(uuid.uuid4())
            status = "DISABLED" if body.get("mode") == "DISABLE" else "ENABLED"
            body.update(recurring_run_id=rr_id, status=status, created_at=_now())
            body["updated_at"] = body["created_at"]
            self.recurring_runs[rr_id] = body
            return 200, body
        rr_id, _, action = rest[0].partition(":")
        if rr_id not in self.recurring_runs or action not in ("enable", "disable"):
            return self._error(404, f"recurring run {rr_id} not found")
        enabled = action == "enable"
        self.recurring_runs[rr_id].update(
            status="ENABLED" if enabled else "DISABLED",
            mode="ENABLE" if enabled else "DISABLE",
            updated_at=_now(),
        )
        return 200, {}

    def _recurring_get(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        if rest:
            rr = self.recurring_runs.get(rest[0])
            return (200, rr) if rr else self._error(404, f"recurring run {rest[0]} not found")
        items = list(self.recurring_runs.values())
        size = int((req.query.get("page_size") or ["10"])[0])
        start = int((req.query.get("page_token") or ["0"])[0] or 0)
        page = items[start : start + size]
        token = str(start + size) if start + size < len(items) else ""
        return 200, {"recurringRuns": page, "total_size": len(items), "next_page_token": token}

    def _recurring_delete(self, req: RecordedRequest, rest: list[str]) -> tuple[int, Any]:
        if not rest or rest[0] not in self.recurring_runs:
            return self._error(404, f"recurring run {rest[0] if rest else ''} not found")
        del self.recurring_runs[rest[0]]
        return 200, {}


def build_standin_pipeline(step_settings: Any = None) -> Any:
    """A seven-step pipeline shaped like the training DAG (same task names and some parameters).

    Args:
        step_settings: A `ClusterSettings`, applied to every task like the real factory does.

    Returns:
        A `@dsl.pipeline` function named `kerasflow-training`.
    """
    from kfp import dsl

    from kerasflow.settings import DEFAULT_IMAGE

    def apply(task: Any, step: str) -> Any:
        if step_settings is not None:
            from kerasflow.pipelines.cluster_settings import apply_step_settings

            apply_step_settings(task, step, step_settings)
        return task

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def ingest_clean(data: str) -> str:
        return data

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def normalize_split(source: str, val_fraction: float) -> str:
        return f"{source}:{val_fraction}"

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def augment(source: str) -> str:
        return source

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def hyperparameter_search(source: str, max_trials: int) -> str:
        return f"{source}:{max_trials}"

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def train(source: str) -> str:
        return source

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def evaluate(model: str, thresholds: dict) -> bool:
        return bool(model) and thresholds is not None

    @dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
    def deploy(model: str, model_name: str) -> str:
        return model_name

    @dsl.pipeline(name="kerasflow-training")
    def standin(
        data: str = "builtin:digits",
        max_trials: int = 10,
        val_fraction: float = 0.15,
        thresholds: dict = {},  # noqa: B006 - KFP reads the default from the signature
        model_name: str = "kerasflow-model",
        tuning_enabled: bool = True,
    ) -> None:
        ingested = apply(ingest_clean(data=data), "ingest_clean")
        split = apply(
            normalize_split(source=ingested.output, val_fraction=val_fraction), "normalize_split"
        )
        augmented = apply(augment(source=split.output), "augment")
        searched = apply(
            hyperparameter_search(source=augmented.output, max_trials=max_trials),
            "hyperparameter_search",
        )
        trained = apply(train(source=searched.output), "train")
        evaluated = apply(evaluate(model=trained.output, thresholds=thresholds), "evaluate")
        with dsl.If(evaluated.output == True):  # noqa: E712 - compiles to a KFP condition
            apply(deploy(model=trained.output, model_name=model_name), "deploy")

    return standin
