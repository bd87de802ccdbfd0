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


def predict_served(work: Path, model: str, *args: str) -> subprocess.CompletedProcess:
    """`kerasflow predict --model-name MODEL ARGS` against a server of what a run in `work`
    deployed (served in this process on free ports)."""
    from kerasflow.serving import ModelServer, ServerOptions, load_model_config_file

    configs = load_model_config_file(str(work / "models" / "models.config"))
    options = ServerOptions(models=configs, grpc_port=0, rest_port=0, poll_seconds=0)
    with ModelServer(options) as server:
        return kerasflow(
            "predict", "--model-name", model, "--rest", server.rest_url, *args, cwd=work
        )
