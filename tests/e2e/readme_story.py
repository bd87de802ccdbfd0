"""Runs README commands as a user would, one story at a time, in a folder of the story's own.

Each command runs as written, as a subprocess (`python -m kerasflow.pipelines.cli`), with only
these changes:
- `kerasflow run` (and `reproduce`'s reruns, which repeat the settings a run recorded) get small
  budgets appended (flags given later win), so that a run measures the command, not training;
- the fixed ports 8500/8501 become free ones, and `tensorboard` gets a free `--port`, so that
  tests in parallel do not collide;
- placeholders (`RUN_ID`, the example data digest) become the story's own values;
- `gs://bucket/...` resolves against an in-process GCS emulator holding a bucket `bucket`.

`serve` starts a server in the background and stops the story's previous one; the commands
after it (`predict`, `rollback`, `canary`) talk to it. A command that fails is recorded with the
tail of its output and the story goes on, so one test run reports every broken command.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from kerasflow import constants as C
from tests.serving_fixtures import free_port

MODEL = "kerasflow-model"
RUN_ID = "RUN_ID"
EXAMPLE_DIGEST = "1f2e3d4c5b6a7980"
_RUN_LINE = re.compile(r"MLflow: run (\w+) in experiment")


@dataclasses.dataclass
class Done:
    words: list[str]
    code: int
    seconds: float
    stdout: str
    stderr: str = ""

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:
        """The JSON document a `--json` command printed."""
        return json.loads(self.stdout)


class Story:
    """The state of one story: its folder, its runs, its server and what failed."""

    def __init__(self, folder: Path, budget: list[str], gcs_host: str | None = None):
        self.folder = folder
        self.budget = budget
        self.env = {
            key: value
            for key, value in os.environ.items()
            # The README's commands use the default store (SQLite in the work dir).
            if key not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
        }
        self.env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if gcs_host:
            self.env["STORAGE_EMULATOR_HOST"] = gcs_host
        self.run_ids: list[str] = []
        self.done: list[Done] = []
        self.failures: list[str] = []
        self.server: subprocess.Popen | None = None
        self.grpc_port = self.rest_port = 0

    # --- running -----------------------------------------------------------------------

    def kerasflow(self, words: list[str], timeout: float = 900) -> Done:
        """`kerasflow WORDS` in the story's folder, recorded."""
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "kerasflow.pipelines.cli", *words],
                cwd=self.folder,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, stdout, stderr = -9, f"timed out after {timeout} s\n", str(exc.stderr or "")
        done = Done(words, code, time.monotonic() - started, stdout, stderr)
        self.done.append(done)
        return done

    def expect(self, done: Done, ok: bool, what: str) -> bool:
        """Records a failure unless `ok`; returns `ok`."""
        if not ok:
            tail = "\n".join(done.output.splitlines()[-25:])
            self.failures.append(
                f"kerasflow {' '.join(done.words)}: {what} (exit {done.code})\n{tail}"
            )
        return ok

    def check(self) -> None:
        """Fails the test with every failed command, after a table of what ran."""
        print(self.table())
        if self.failures:
            pytest.fail("\n\n".join(self.failures), pytrace=False)

    def table(self) -> str:
        rows = [f"{d.seconds:7.1f} s  exit {d.code:>3}  kerasflow {' '.join(d.words)}"[:160]
                for d in self.done]  # fmt: skip
        total = sum(d.seconds for d in self.done)
        return "\n".join([*rows, f"{total:7.1f} s  in all ({len(self.done)} commands)"])

    # --- the commands --------------------------------------------------------------------

    def fill(self, words: list[str]) -> list[str]:
        """The command with ports and placeholders made concrete."""
        out = []
        for word in words:
            if word == RUN_ID:
                # reproduce: the story's first run; tensorboard: the latest one, as a user would.
                word = self.run_ids[0] if words[0] == "reproduce" else self.run_ids[-1]
            elif word == EXAMPLE_DIGEST:
                word = self.data_digest()
            word = word.replace("localhost:8500", f"localhost:{self.grpc_port}")
            out.append(word)
        for name, port in (("--port", self.grpc_port), ("--rest_api_port", self.rest_port)):
            if words[0] == "serve" and name in out:
                out[out.index(name) + 1] = str(port)
        return out

    def do(self, words: list[str], extra: list[str] = ()) -> Done:
        """Runs one README command the way its kind needs."""
        kind = words[0]
        if kind == "serve":
            return self.serve(words)
        if kind == "tensorboard" and "--download-only" not in words:
            return self.tensorboard(self.fill(words))
        if kind == "run":
            return self.run([*words, *self.budget, *extra])
        done = self.kerasflow(self.fill(words))
        expected = (0, 1) if kind == "drift" else (0,)  # drift: 1 means "drifted"
        self.expect(done, done.code in expected, "failed")
        if kind == "drift" and "--json" in words and done.code in expected:
            verdict = done.json()["drifted"]
            self.expect(done, verdict == (done.code == 1), f"drifted {verdict}, exit {done.code}")
        return done

    def run(self, words: list[str]) -> Done:
        done = self.kerasflow(words)
        if self.expect(done, done.code == 0, "the run failed"):
            found = _RUN_LINE.search(done.output)
            if self.expect(done, found is not None, "no MLflow run in the summary"):
                self.run_ids.append(found.group(1))
        return done

    def data_digest(self) -> str:
        done = self.kerasflow(["lineage", "--model-name", MODEL, "--json"])
        self.expect(done, done.code == 0, "lineage of the champion failed")
        return done.json()["data"]["digest"]

    def tensorboard(self, words: list[str]) -> Done:
        """`kerasflow tensorboard RUN_ID` serves until stopped: it must answer over HTTP."""
        port = free_port()
        started = time.monotonic()
        log = self.folder / "tensorboard.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kerasflow.pipelines.cli", *words, "--port", str(port)],
                cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        answered = False
        try:
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and proc.poll() is None and not answered:
                try:
                    answered = requests.get(f"http://127.0.0.1:{port}/", timeout=5).ok
                except requests.ConnectionError:
                    time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        done = Done(words, 0 if answered else proc.returncode, time.monotonic() - started,
                    log.read_text())  # fmt: skip
        self.done.append(done)
        self.expect(done, answered, "TensorBoard did not answer")
        # Stopping the command stops TensorBoard: nothing answers on the port any more.
        self.expect(done, not _answers(port), "TensorBoard outlived the command it was run by")
        return done

    def serve(self, words: list[str]) -> Done:
        """Starts `kerasflow serve` (stopping the story's previous server) and waits until it
        serves the model over REST."""
        self.stop_server()
        self.grpc_port, self.rest_port = free_port(), free_port()
        words = self.fill(words)
        started = time.monotonic()
        log = self.folder / "serve.log"
        with open(log, "a") as out:
            self.server = subprocess.Popen(
                [sys.executable, "-m", "kerasflow.pipelines.cli", *words],
                cwd=self.folder, env=self.env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        ok = self.wait_available(timeout=180)
        done = Done(words, 0 if ok else -1, time.monotonic() - started, log.read_text())
        self.done.append(done)
        self.expect(done, ok, "the server did not serve the model")
        return done

    def model_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}/v1/models/{MODEL}"

    def wait_available(self, timeout: float, versions: int = 1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server is None or self.server.poll() is not None:
                return False
            try:
                answer = requests.get(self.model_url(), timeout=5)
                states = [v["state"] for v in answer.json().get("model_version_status", [])]
                if states.count("AVAILABLE") >= versions:
                    return True
            except (requests.ConnectionError, ValueError):
                pass
            time.sleep(0.2)
        return False

    def stop_server(self) -> None:
        """Stops the story's server; it finishes its request log files as it stops."""
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=60)
            self.server = None

    def send_digits(self, count: int) -> None:
        """`count` batch-1 REST predicts of digits images, as clients would send."""
        from sklearn.datasets import load_digits

        images = load_digits().images[..., None]
        for i in range(count):
            body = {"instances": [{C.IMAGE_INPUT: images[i % len(images)].tolist()}]}
            answer = requests.post(self.model_url() + ":predict", json=body, timeout=60)
            assert answer.status_code == 200, answer.text


def _answers(port: int) -> bool:
    try:
        requests.get(f"http://127.0.0.1:{port}/", timeout=5)
        return True
    except requests.ConnectionError:
        return False


def write_digit_png(path: Path, index: int = 0) -> None:
    """One of scikit-learn's digits as an 8-bit grayscale PNG, as a user would have it."""
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = load_digits().images[index] * (255.0 / 16.0)
    Image.fromarray(np.round(pixels).astype(np.uint8), mode="L").save(path)
