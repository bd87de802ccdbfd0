"""Keeping the console readable while kfp.local runs: everything to a log file, the essentials
(step starts and ends, progress lines, errors) to the terminal.

On a terminal the steps' epoch, trial and file counts (kerasflow.runtime.progress) are drawn as
live rich progress bars, and each bar leaves its last line behind when its step ends; piped
output gets the steps' compact lines as they are.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from kerasflow.runtime.progress import LINE as PROGRESS_LINE

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_KEEP = (
    re.compile(
        r"\[\d\d:\d\d:\d\d\] \w+: "
    ),  # progress lines of the steps (kerasflow.runtime.boundary)
    re.compile(r"Executing task '"),
    re.compile(r"finished with status"),
    re.compile(r"kerasflow: error"),
    re.compile(r"Task '[^']+' (skipped|not run)", re.IGNORECASE),
)


class LiveBars:
    """Rich progress bars, one per step and unit, fed with the steps' progress lines."""

    def __init__(self, console: TextIO) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            # The step's own estimate (it knows time budgets and Hyperband's plan).
            TextColumn("{task.fields[details]}"),
            console=Console(file=console, force_terminal=True, highlight=False),
            redirect_stdout=False,
            redirect_stderr=False,
            transient=False,
        )
        self._tasks: dict[tuple[str, str], Any] = {}
        self._last: dict[tuple[str, str], str] = {}

    def start(self) -> None:
        self.progress.start()

    def stop(self) -> None:
        for key in list(self._tasks):
            self._close(key)
        self.progress.stop()

    def print(self, line: str) -> None:
        """Prints a line above the bars."""
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)
        if "finished with status" in line or "kerasflow: error" in line:
            for key in list(self._tasks):  # a step ended: its bars become plain lines
                self._close(key)

    def update(self, line: str, match: re.Match) -> None:
        """Moves the bar a progress line is about (a new one for a new step or unit)."""
        key = (match["step"], match["unit"])
        done = int(match["done"])
        total = int(match["total"]) if match["total"] else None
        details = match["details"].strip()
        if key not in self._tasks:
            self._tasks[key] = self.progress.add_task(
                f"{key[0]}: {key[1]}", total=total, details=details
            )
        self.progress.update(self._tasks[key], completed=done, total=total, details=details)
        self._last[key] = line

    def _close(self, key: tuple[str, str]) -> None:
        self.progress.remove_task(self._tasks.pop(key))
        self.progress.console.print(self._last.pop(key), markup=False, highlight=False)


class FilteredStream:
    """A text stream that copies every write to `log` and whole lines that matter to `console`
    (progress lines to `bars` instead, when given)."""

    def __init__(self, console: TextIO, log: TextIO, bars: LiveBars | None = None) -> None:
        self.console = console
        self.log = log
        self.bars = bars
        self._pending = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            plain = _ANSI.sub("", line).strip()
            if not plain or not any(p.search(plain) for p in _KEEP):
                continue
            if self.bars is None:
                self.console.write(plain + "\n")
            elif match := PROGRESS_LINE.search(plain):
                self.bars.update(plain, match)
            else:
                self.bars.print(plain)
        self.console.flush()
        return len(text)

    def flush(self) -> None:
        self.log.flush()
        self.console.flush()

    def isatty(self) -> bool:
        return False


@contextlib.contextmanager
def quiet_console(log_path: Path, verbose: bool = False) -> Iterator[Path]:
    """Routes stdout and stderr through a FilteredStream (or only tees them when verbose)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if verbose:
        yield log_path
        return
    with log_path.open("w", encoding="utf-8") as log:
        out, err = sys.stdout, sys.stderr
        bars = LiveBars(out) if out.isatty() else None
        sys.stdout = FilteredStream(out, log, bars)  # type: ignore[assignment]
        sys.stderr = FilteredStream(err, log, bars if err.isatty() else None)  # type: ignore[assignment]
        if bars is not None:
            bars.start()
        try:
            yield log_path
        finally:
            sys.stdout.flush()
            sys.stdout, sys.stderr = out, err
            if bars is not None:
                bars.stop()
