"""Keeping the console readable while kfp.local runs: everything to a log file, the essentials
(step starts and ends, progress lines, errors) to the terminal."""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

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


class FilteredStream:
    """A text stream that copies every write to `log` and whole lines that matter to `console`."""

    def __init__(self, console: TextIO, log: TextIO) -> None:
        self.console = console
        self.log = log
        self._pending = ""

    def write(self, text: str) -> int:
        self.log.write(text)
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            plain = _ANSI.sub("", line).strip()
            if plain and any(p.search(plain) for p in _KEEP):
                self.console.write(plain + "\n")
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
        sys.stdout = FilteredStream(out, log)  # type: ignore[assignment]
        sys.stderr = FilteredStream(err, log)  # type: ignore[assignment]
        try:
            yield log_path
        finally:
            sys.stdout.flush()
            sys.stdout, sys.stderr = out, err
