"""The life of the MLflow runs of a pipeline: heartbeats, ending, and reconciling orphans.

Every run a pipeline opens ends FINISHED, FAILED or KILLED:

- a step's run ends with the step (`runs.step_run`), KILLED when the step is interrupted;
- the pipeline's run is ended by the pipeline's exit handler (`finish_pipeline_run`), which runs
  whether the steps succeeded or not, and by `kerasflow run` itself when it is interrupted;
- a process killed outright (SIGKILL, a lost node, a tracking server that stopped answering)
  cannot end its runs. While a step works, a heartbeat thread stamps its run and the pipeline's
  run with the time and the lease the owner promised (`kerasflow.heartbeat`, `kerasflow.lease_s`).
  `reconcile` ends KILLED only the runs whose lease expired: their owner is provably gone.
  Another run that is alive keeps beating, so two pipelines can share an experiment.

The same heartbeat is the watchdog of the tracking server: when no call has reached it for
`tracking_timeout` seconds the step stops with one line naming the tracking URI, instead of
retrying for ever.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasflow import constants as C

TIMEOUT_ENV = "KERASFLOW_TRACKING_TIMEOUT_S"
LEASE_ENV = "KERASFLOW_RUN_LEASE_S"
STOP_FILE_ENV = "KERASFLOW_STOP_FILE"
DRIVER_ENV = "KERASFLOW_DRIVER"
"""Set by `kerasflow run` for its steps: `<token>:<pid>` of the driving process (pid 0 when
the steps run in containers, which cannot see it)."""
ALIVE_ENV = "KERASFLOW_DRIVER_ALIVE"
"""A file `kerasflow run` touches every second while it lives (for steps in containers)."""
ALIVE_STALE_S = 15.0

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_LEASE_S = 900.0
"""Lease when nothing sets one: on a cluster a step's pod may wait minutes to be scheduled."""

TAG_HEARTBEAT = "kerasflow.heartbeat"
TAG_LEASE = "kerasflow.lease_s"
TAG_OWNER = "kerasflow.owner"
TAG_DRIVER = "kerasflow.driver"
TAG_END_REASON = "kerasflow.end_reason"
TERMINAL = ("FINISHED", "FAILED", "KILLED")
WATCHDOG_EXIT = 75


def tracking_timeout() -> float:
    """Seconds a step keeps trying an unanswering tracking server (KERASFLOW_TRACKING_TIMEOUT_S)."""
    return _seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def run_lease() -> float:
    """Seconds without a heartbeat after which a run's owner counts as gone."""
    return _seconds(LEASE_ENV, DEFAULT_LEASE_S)


def heartbeat_interval(lease: float | None = None) -> float:
    """How often a live step stamps its runs: often enough that a lease never lapses."""
    return max(1.0, min(15.0, (lease or run_lease()) / 6))


def _seconds(env: str, default: float) -> float:
    try:
        value = float(os.environ.get(env, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


def client_environment(timeout: float) -> dict[str, str]:
    """MLflow client settings that keep each tracking call within about `timeout` seconds.

    MLflow retries a failing call with exponential backoff (minutes by default); a run must
    notice a lost server in bounded time instead.
    """
    per_request = max(2.0, min(30.0, timeout / 3))
    return {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(per_request)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
    }


def owner_tags(lease: float | None = None) -> dict[str, str]:
    """The tags a run's owner sets when it opens the run."""
    tags = {
        TAG_HEARTBEAT: f"{time.time():.0f}",
        TAG_LEASE: f"{lease or run_lease():.0f}",
        TAG_OWNER: f"{os.uname().nodename}:{os.getpid()}",
    }
    driver = os.environ.get(DRIVER_ENV, "")
    if driver:
        tags[TAG_DRIVER] = driver.split(":", 1)[0]
    return tags


# --- stopping -----------------------------------------------------------------------------


class Interrupted(BaseException):  # noqa: N818 - a signal, like KeyboardInterrupt
    """The step was asked to stop (SIGINT, SIGTERM, or `kerasflow run` was interrupted)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def stop_requested() -> str:
    """The reason `kerasflow run` asked its steps to stop, or "" (read from its stop file)."""
    path = os.environ.get(STOP_FILE_ENV, "")
    if path and os.path.exists(path):
        try:
            return Path(path).read_text(encoding="utf-8").strip() or "interrupted"
        except OSError:
            return "interrupted"
    return ""


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted in the main thread while the body runs.

    Under `kerasflow run` the step also gets SIGTERM when that process dies, even by SIGKILL,
    so a step never outlives the command that started it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    stopping = []

    def handler(signum: int, _frame: Any) -> None:
        # One interrupt is enough: a second one (Ctrl-C reaches every process of the group and
        # `kerasflow run` forwards it too) must not cut short the step ending its run KILLED.
        if not stopping:
            stopping.append(signum)
            raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    _die_with_driver()
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _die_with_driver() -> None:
    """Under `kerasflow run`, SIGTERM to this process once the driving process is gone.

    A step that is a subprocess watches the driver's pid; a step in a container, which
    cannot see it, watches the file the driver touches every second.
    """
    driver, alive = os.environ.get(DRIVER_ENV, ""), os.environ.get(ALIVE_ENV, "")
    try:
        pid = int(driver.rsplit(":", 1)[1]) if driver else 0
    except (ValueError, IndexError):
        pid = 0
    if alive:
        gone = lambda: not driver_alive(alive)  # noqa: E731
    elif pid > 0 and pid != os.getpid():
        gone = lambda: not pid_alive(pid)  # noqa: E731
    else:
        return

    def watch() -> None:
        while not gone():
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="kerasflow-driver-watch", daemon=True).start()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's process counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_alive(path: str) -> bool:
    """Whether the driver that touches `path` touched it within ALIVE_STALE_S seconds."""
    try:
        return time.time() - os.stat(path).st_mtime < ALIVE_STALE_S
    except OSError:
        return False


@contextlib.contextmanager
def keep_alive(path: Path) -> Iterator[None]:
    """Touches `path` every second while the body runs (the driver's sign of life)."""
    stop = threading.Event()
    path.touch()

    def beat() -> None:
        while not stop.wait(1.0):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name="kerasflow-keep-alive", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(OSError):
            path.unlink()


def child_pids(pid: int | None = None) -> list[int]:
    """Every live descendant of `pid` (this process by default), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X"):
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid or os.getpid()]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def signal_children(signum: int) -> None:
    """Sends `signum` to every descendant of this process."""
    for child in child_pids():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signum)


# --- heartbeat and watchdog ---------------------------------------------------------------


class Heartbeat:
    """Stamps runs with the time while a step works; stops the step if tracking is gone.

    A background thread sets `kerasflow.heartbeat` on each run every `heartbeat_interval()`
    seconds. A second thread watches the time since any tracking call last succeeded: past
    `tracking_timeout()` seconds it prints one line naming the tracking URI, ends this
    process's children and exits the process with code 75.
    """

    def __init__(self, tracking_uri: str, run_ids: list[str], step: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_ids = [r for r in run_ids if r]
        self.step = step
        self.interval = heartbeat_interval()
        self.timeout = tracking_timeout()
        self.last_ok = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Heartbeat:
        for target, name in ((self._beat, "heartbeat"), (self._watch, "tracking-watchdog")):
            thread = threading.Thread(target=target, name=f"kerasflow-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _beat(self) -> None:
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=self.tracking_uri)
        while not self._stop.wait(self.interval):
            try:
                for run_id in self.run_ids:
                    client.set_tag(run_id, TAG_HEARTBEAT, f"{time.time():.0f}")
                self.last_ok = time.monotonic()
            except Exception:  # noqa: BLE001 - the watchdog decides when silence is fatal
                continue

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            silent = time.monotonic() - self.last_ok
            if silent > self.timeout + self.interval:
                self._give_up(silent)

    def _give_up(self, silent: float) -> None:
        print(
            f"kerasflow: error in {self.step}: the MLflow tracking server at "
            f"{self.tracking_uri} has not answered for {silent:.0f} s (tracking_timeout "
            f"{self.timeout:.0f} s); the step stopped, nothing after it runs",
            file=sys.stderr,
            flush=True,
        )
        signal_children(signal.SIGKILL)
        os._exit(WATCHDOG_EXIT)


# --- ending and reconciling ---------------------------------------------------------------


@dataclass
class Ended:
    """A run this module ended, for the summary."""

    run_id: str
    name: str
    kind: str
    status: str
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} run {self.name} ({self.run_id[:8]}) ended {self.status}: {self.reason}"


def _end(client: Any, run: Any, status: str, reason: str) -> Ended:
    client.set_tag(run.info.run_id, TAG_END_REASON, reason)
    client.set_terminated(run.info.run_id, status=status)
    tags = run.data.tags
    return Ended(
        run.info.run_id,
        run.info.run_name or "",
        tags.get(C.TAG_KIND, "run"),
        status,
        reason,
    )


def _running(client: Any, experiment_ids: list[str], extra: str = "") -> list[Any]:
    found = []
    token = None
    query = "attributes.status = 'RUNNING'" + (f" and {extra}" if extra else "")
    while True:
        page = client.search_runs(experiment_ids, query, max_results=1000, page_token=token)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _descendants(client: Any, experiment_id: str, root_id: str) -> list[Any]:
    """RUNNING runs nested (at any depth) under `root_id`."""
    running = _running(client, [experiment_id])
    children: dict[str, list[Any]] = {}
    for run in running:
        children.setdefault(run.data.tags.get("mlflow.parentRunId", ""), []).append(run)
    out, todo = [], [root_id]
    while todo:
        for run in children.get(todo.pop(), []):
            out.append(run)
            todo.append(run.info.run_id)
    return out


def finish_pipeline_run(client: Any, run_id: str, status: str, reason: str) -> list[Ended]:
    """Ends a pipeline's run with `status`, and every run still RUNNING under it.

    A step run still RUNNING when its pipeline ends had a process that could not end it, so it
    ends FAILED (KILLED when the pipeline was interrupted). A run that has ended keeps its end.
    """
    run = client.get_run(run_id)
    inner = "KILLED" if status == "KILLED" else "FAILED"
    ended = [
        _end(client, child, inner, f"its pipeline ended {status}: {reason}")
        for child in _descendants(client, run.info.experiment_id, run_id)
    ]
    if run.info.status not in TERMINAL:
        ended.append(_end(client, run, status, reason))
    return ended


def reconcile(client: Any, experiment_id: str, now: float | None = None) -> list[Ended]:
    """Ends KILLED every RUNNING pipeline or step run whose owner's lease has expired.

    A run without a heartbeat (written before heartbeats existed) counts from its start time.
    Runs nested under a reconciled run end with it, and so does a RUNNING run nested under one
    that has already ended.
    """
    now = time.time() if now is None else now
    ended: list[Ended] = []
    done: set[str] = set()
    for run in _running(client, [experiment_id]):
        tags = run.data.tags
        if tags.get(C.TAG_KIND) not in (C.KIND_PIPELINE, C.KIND_STEP):
            continue
        if run.info.run_id in done:
            continue
        try:
            lease = float(tags.get(TAG_LEASE, DEFAULT_LEASE_S))
            beat = float(tags.get(TAG_HEARTBEAT, run.info.start_time / 1000))
        except ValueError:
            lease, beat = DEFAULT_LEASE_S, run.info.start_time / 1000
        if now - beat <= lease:
            continue
        owner = tags.get(TAG_OWNER, "its process")
        reason = (
            f"reconciled: no heartbeat from {owner} for {now - beat:.0f} s (lease {lease:.0f} s)"
        )
        for child in _descendants(client, experiment_id, run.info.run_id):
            if child.info.run_id not in done:
                ended.append(_end(client, child, "KILLED", reason))
                done.add(child.info.run_id)
        ended.append(_end(client, run, "KILLED", reason))
        done.add(run.info.run_id)
    # A run nested under one that has ended (a trial whose step was killed while recording it)
    # has no owner left to end it.
    running = _running(client, [experiment_id])
    alive = {run.info.run_id for run in running}
    for run in running:
        parent = run.data.tags.get("mlflow.parentRunId", "")
        if parent and parent not in alive:
            ended.append(_end(client, run, "KILLED", "reconciled: the run it is nested in ended"))
    return ended


def end_nested(client: Any, run_id: str, status: str, reason: str) -> list[Ended]:
    """Ends every run still RUNNING under `run_id` (a step that failed or was interrupted)."""
    run = client.get_run(run_id)
    return [
        _end(client, child, status, reason)
        for child in _descendants(client, run.info.experiment_id, run_id)
    ]


def find_driven_run(client: Any, experiment_id: str, token: str) -> Any | None:
    """The pipeline run opened for the `kerasflow run` whose driver token is `token`."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`{TAG_DRIVER}` = '{token}' and tags.`{C.TAG_KIND}` = '{C.KIND_PIPELINE}'",
        max_results=1,
    )
    return found[0] if found else None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Serializes the first use of a SQLite tracking store between processes.

    MLflow creates or migrates a SQLite store's schema on first use; two processes doing it
    at once fail (`duplicate column name`). Other stores need no lock.
    """
    if not tracking_uri.startswith("sqlite:///"):
        yield
        return
    from kerasflow.runtime.fileio import exclusive_lock

    db = Path(tracking_uri[len("sqlite:///") :])
    with exclusive_lock(str(db.parent), db.name + ".lock"):
        yield


def prepare_store(tracking_uri: str) -> None:
    """Creates or upgrades the tracking store's schema once, under the store lock."""
    import mlflow

    with store_lock(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)


def bounded(fn: Any, timeout: float, *args: Any, **kwargs: Any) -> Any:
    """Calls `fn` in a thread; raises TimeoutError when it has not returned within `timeout`."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("value")
