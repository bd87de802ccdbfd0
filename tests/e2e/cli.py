"""Runs the `kerasflow` command as a user does: a subprocess of this interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def kerasflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`kerasflow ARGS` in `cwd`, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "kerasflow.pipelines.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
