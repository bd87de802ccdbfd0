"""Progress of a step's long work (epochs, tuning trials, files read) as compact lines.

A step's output is never a terminal (kfp.local reads it through a pipe, a cluster keeps it as a
pod log), so a step prints one line per epoch, per trial or per tenth of the files, each with
the elapsed time and an estimate of what is left:

    [12:00:03] train: epoch 3/30 loss 0.2107 val_accuracy 0.9611; elapsed 0:00:09, eta 0:01:21

`kerasflow run` draws these lines as live bars when its own output is a terminal
(kerasflow.pipelines.console) and passes them through as they are when it is piped.
"""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Callable
from typing import Any

from kerasflow.runtime import boundary

UNITS = ("epoch", "trials", "files")
# What kerasflow.pipelines.console recognizes: `[hh:mm:ss] STEP: UNIT DONE[/TOTAL] DETAILS`.
LINE = re.compile(
    r"\[\d\d:\d\d:\d\d\] (?P<step>\w+): (?P<unit>" + "|".join(UNITS) + r") "
    r"(?P<done>\d+)(?:/(?P<total>\d+))?(?P<details>.*)$"
)


def clock(seconds: float) -> str:
    """`seconds` as h:mm:ss."""
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


class Progress:
    """Counts units of work done out of a planned total and prints them as progress lines.

    Args:
        step: The step the lines name.
        unit: `epoch`, `trials` or `files`.
        total: The planned count (None when only a deadline bounds the work).
        every: Print at most once per this share of `total` (0 prints every update).
        deadline: Epoch seconds the work stops at (0 for none); caps the estimate.
        done: Units already done before this process started (a resumed search).
        emit: Where lines go (boundary.progress, by default).
        clock_fn: The monotonic clock (a test passes its own).
    """

    def __init__(
        self,
        step: str,
        unit: str,
        total: int | None,
        *,
        every: float = 0.0,
        deadline: float = 0.0,
        done: int = 0,
        emit: Callable[[str, str], None] | None = None,
        clock_fn: Callable[[], float] = time.monotonic,
    ) -> None:
        if unit not in UNITS:
            raise ValueError(f"unknown progress unit {unit!r}")
        self.step, self.unit, self.total = step, unit, total
        self.deadline, self.done = deadline, done
        self._initial = done
        self._emit = emit or boundary.progress
        self._clock = clock_fn
        self._started = clock_fn()
        self._step_size = max(1, math.ceil((total or 0) * every)) if every else 1
        self._last_printed = done

    def remaining_seconds(self) -> float | None:
        """The estimate of the time left: the pace so far over what is left, capped by the
        deadline; None before anything was done in this process and no deadline is set."""
        elapsed = self._clock() - self._started
        ran = self.done - self._initial
        estimates = []
        if self.total and ran > 0:
            estimates.append(elapsed / ran * max(0, self.total - self.done))
        if self.deadline:
            estimates.append(max(0.0, self.deadline - time.time()))
        return min(estimates) if estimates else None

    def update(self, done: int | None = None, details: str = "") -> None:
        """Records progress (`done` units, else one more) and prints a line when one is due."""
        self.done = self.done + 1 if done is None else done
        finished = self.total is not None and self.done >= self.total
        if not finished and self.done - self._last_printed < self._step_size:
            return
        self._last_printed = self.done
        self._emit(self.step, self.line(details))

    def line(self, details: str = "") -> str:
        """The progress line's text after `STEP: `."""
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        timing = f"elapsed {clock(self._clock() - self._started)}"
        left = self.remaining_seconds()
        if left is not None:
            timing += f", eta {clock(left)}"
        return f"{self.unit} {count}{' ' + details if details else ''}; {timing}"


def in_current_step(unit: str, total: int, every: float = 0.0) -> Progress | None:
    """A Progress for the step this process runs; None outside a step (a library called
    directly stays quiet)."""
    step = boundary.current_step()
    return Progress(step, unit, total, every=every) if step else None


def format_metrics(logs: dict[str, Any], names: tuple[str, ...]) -> str:
    """`loss 0.2107 val_accuracy 0.9611` for the named metrics present in a Keras `logs`."""
    return " ".join(f"{k} {float(logs[k]):.4f}" for k in names if k in logs)


def epoch_callback(step: str, epochs: int, monitor: str) -> Any:
    """A Keras callback that prints a progress line per epoch with the loss and `monitor`.

    Early stopping may end the fit before `epochs`; the estimate assumes it runs them all.
    """
    import keras

    shown = tuple(dict.fromkeys(("loss", "val_loss", monitor)))

    class _EpochProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.progress: Progress | None = None

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.progress = Progress(step, "epoch", epochs)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if self.progress is not None:
                self.progress.update(epoch + 1, format_metrics(logs or {}, shown))

    return _EpochProgress()
