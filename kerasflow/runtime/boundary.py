"""What every step's core shares: error handling at the step boundary, progress lines and
(when KERASFLOW_TIMINGS names a file) a record of where the step's time went."""

from __future__ import annotations

import functools
import importlib
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kerasflow.runtime.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])

TIMINGS_ENV = "KERASFLOW_TIMINGS"
_tracking_seconds = 0.0
_tracking_depth = 0


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
    would bury the message, and a user error is not our bug. `heavy_imports` are imported first
    so their cost is reported apart from the step's work.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            for module in heavy_imports:
                importlib.import_module(module)
            imported = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                print(f"kerasflow: error in {step}: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            finally:
                _record_timing(step, imported - started, time.perf_counter() - imported)

        return wrapper  # type: ignore[return-value]

    return decorate


def _record_timing(step: str, import_s: float, body_s: float) -> None:
    path = os.environ.get(TIMINGS_ENV)
    if not path:
        return
    record = {
        "step": step,
        "import_s": import_s,
        "tracking_s": _tracking_seconds,
        "work_s": body_s - _tracking_seconds,
        "pid": os.getpid(),
        "end": time.time(),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def progress(step: str, message: str) -> None:
    """Prints one progress line, flushed, so a user watching the run sees it at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {step}: {message}", flush=True)
