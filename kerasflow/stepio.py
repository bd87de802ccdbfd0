"""What every step's core shares: error handling at the step boundary and progress lines."""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kerasflow.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def step_entry(step: str) -> Callable[[F], F]:
    """Wraps a step's entry point so a user error ends the step with one line and exit code 2.

    Inside a KFP step a traceback would bury the message; a user error is not our bug.
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except UserError as exc:
                print(f"kerasflow: error in {step}: {exc}", file=sys.stderr, flush=True)
                raise SystemExit(2) from None

        return wrapper  # type: ignore[return-value]

    return decorate


def progress(step: str, message: str) -> None:
    """Prints one progress line, flushed, so a user watching the run sees it at once."""
    print(f"[{time.strftime('%H:%M:%S')}] {step}: {message}", flush=True)
