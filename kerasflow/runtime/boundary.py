"""What every step's core shares: error handling at the step boundary, progress lines and
(when KERASFLOW_TIMINGS names a file) a record of where the step's time went."""

from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kerasflow.runtime.errors import UserError, first_line

F = TypeVar("F", bound=Callable[..., Any])

TIMINGS_ENV = "KERASFLOW_TIMINGS"
_tracking_seconds = 0.0
_tracking_depth = 0
_current_step = ""


def current_step() -> str:
    """The step this process runs (empty outside a step), for libraries that report progress."""
    return _current_step


def add_tracking_time(seconds: float) -> None:
    """Adds time spent talking to MLflow (reported separately from the step's work)."""
    global _tracking_seconds
    _tracking_seconds += seconds


def timed_tracking(fn: F) -> F:
    """Decorator: counts the wrapped call's duration as tracking time."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _tracking_depth
        started = time.perf_counter()
        _tracking_depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            _tracking_depth -= 1
            if _tracking_depth == 0:  # nested tracking calls are counted once, by the outermost
                add_tracking_time(time.perf_counter() - started)

    return wrapper  # type: ignore[return-value]


def step_entry(step: str, heavy_imports: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Wraps a step's entry point.

    A user error ends the step with one line and exit code 2: inside a KFP step a traceback
    would bury the message, and a user error is not our bug. So do a full disk (exit 2) and an
    interrupt (SIGINT or SIGTERM: exit 128 + the signal's number, the step's MLflow run ends
    KILLED). A step of an interrupted `kerasflow run` does not start. `heavy_imports` are
    imported first so their cost is reported apart from the step's work.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from kerasflow.tracking import lifecycle

            global _current_step
            _current_step = step
            started = imported = time.perf_counter()
            code: Any = 1
            try:
                with lifecycle.interruptible():
                    stopped = lifecycle.stop_requested()
                    if stopped:
                        _fail(step, f"not started: {stopped}", 130)
                    for module in heavy_imports:
                        importlib.import_module(module)
                    imported = time.perf_counter()
                    result = fn(*args, **kwargs)
                    code = 0
                    _skip_teardown_at_exit()
                    return result
            except UserError as exc:
                _fail(step, str(exc), 2)
            except lifecycle.Interrupted as exc:
                _fail(step, str(exc), 128 + exc.signum)
            except OSError as exc:
                if exc.errno not in _STORAGE_ERRORS:
                    raise
                _fail(step, storage_error_message(exc), 2)
            except Exception as exc:
                if not _is_tracking_error(exc):
                    raise
                _fail(step, tracking_error_message(exc), 3)
            except SystemExit as exc:
                code = exc.code
                raise
            finally:
                _record_timing(step, imported - started, time.perf_counter() - imported)
                _record_exit(step, code)

        return wrapper  # type: ignore[return-value]

    return decorate


_STORAGE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_uncaught: list[BaseException] = []


def _skip_teardown_at_exit() -> None:
    """In a KFP step process whose step succeeded, ends the process right after the exit
    handlers instead of tearing down every module: TensorFlow's teardown alone costs a second or
    more per step. An exception that escapes after the step (the executor writing its outputs)
    still ends the process the normal way, with its traceback and exit code 1."""
    if os.environ.get("_KFP_RUNTIME") != "true" or _uncaught:
        return
    previous = sys.excepthook

    def note_uncaught(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        _uncaught.append(exc)
        previous(kind, exc, tb)

    sys.excepthook = note_uncaught
    atexit.unregister(_exit_now)
    atexit.register(_exit_now)


def _exit_now() -> None:
    # Registered last, so it runs first: run the others (MLflow's flushes, logging's) now.
    atexit.unregister(_exit_now)
    atexit._run_exitfuncs()
    if _uncaught:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(0)


def storage_error_message(exc: OSError) -> str:
    """One line for a write the storage refused, naming the path when it is known."""
    where = f" writing {exc.filename}" if exc.filename else ""
    return f"{os.strerror(exc.errno or 0).lower()}{where} (free some space, then rerun)"


def _is_tracking_error(exc: Exception) -> bool:
    """An error of the MLflow client talking to its server (not a bug of the step)."""
    if "mlflow" not in sys.modules:
        return False
    from mlflow.exceptions import MlflowException

    try:
        from requests.exceptions import RequestException
    except ImportError:  # pragma: no cover - mlflow depends on requests
        RequestException = MlflowException  # noqa: N806
    if isinstance(exc, RequestException):
        return True
    if isinstance(exc, MlflowException):
        text = str(exc)
        return "API request to" in text or "Max retries exceeded" in text
    return False


def tracking_error_message(exc: Exception) -> str:
    """One line for an MLflow tracking server that failed or did not answer."""
    import mlflow

    first = first_line(exc)
    return (
        f"the MLflow tracking server at {mlflow.get_tracking_uri()} did not answer: {first[:240]}"
    )


def _fail(step: str, message: str, code: int) -> None:
    print(f"kerasflow: error in {step}: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code) from None


STATUS_DIR_ENV = "KERASFLOW_STATUS_DIR"


def _record_exit(step: str, code: Any) -> None:
    """Leaves the step's exit status where `kerasflow run` checks it (when it asks)."""
    folder = os.environ.get(STATUS_DIR_ENV)
    if not folder:
        return
    try:
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{step}.exit"), "w", encoding="utf-8") as fh:
            fh.write(f"{code if isinstance(code, int) else 1}\n")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """The most memory this process, or any of its finished children, held at once."""
    import resource

    kb = max(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    )
    return kb / 1024


def _record_timing(step: str, import_s: float, body_s: float) -> None:
    path = os.environ.get(TIMINGS_ENV)
    if not path:
        return
    record = {
        "step": step,
        "import_s": import_s,
        "tracking_s": _tracking_seconds,
        "work_s": body_s - _tracking_seconds,
        "peak_rss_mb": _peak_rss_mb(),
        "pid": os.getpid(),
        "end": time.time(),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def progress(step: str, message: str) -> None:
    """Prints one progress line, flushed, so a user watching the run sees it at once."""
    try:
        print(f"[{time.strftime('%H:%M:%S')}] {step}: {message}", flush=True)
    except BrokenPipeError:
        # Whoever read this step's output (`kerasflow run`) is gone: the driver watch ends the
        # step as interrupted. Until it does, lines go nowhere instead of failing the step.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
