"""Runs the `kerasflow` command as a user does: a subprocess of this interpreter."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def kerasflow(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """`kerasflow ARGS` in `cwd`, its output captured as text (killed after `timeout` s)."""
    return subprocess.run(
        [sys.executable, "-m", "kerasflow.pipelines.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
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


def start(*args: str, cwd: Path, log: Path) -> subprocess.Popen:
    """`kerasflow ARGS` started in `cwd` and left running, its output going to `log`."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kerasflow.pipelines.cli", *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )


def serve_and_predict(config_file: str, model: str, instances: list[dict], cwd: Path) -> dict:
    """Starts `kerasflow serve --model_config_file CONFIG_FILE`, waits until `model` is
    available over REST, and returns its version status and its answer to `instances`."""
    import pytest
    import requests

    from tests.serving_fixtures import free_port, wait_for

    port = free_port()
    log = cwd / "serve.log"
    server = start(
        "serve", f"--model_config_file={config_file}", "--port=0", f"--rest_api_port={port}",
        cwd=cwd, log=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1/models/{model}"

    def answers() -> bool:
        if server.poll() is not None:
            pytest.fail(log.read_text()[-3000:])
        try:
            return requests.get(url, timeout=5).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_for(answers, timeout=180, what=f"kerasflow serve from {config_file}")
        status = requests.get(url, timeout=30).json()["model_version_status"]
        answer = requests.post(f"{url}:predict", json={"instances": instances}, timeout=60)
        assert answer.status_code == 200, answer.text
        return {"status": status, "predictions": answer.json()["predictions"]}
    finally:
        server.terminate()
        server.wait(timeout=60)
