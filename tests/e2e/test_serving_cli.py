"""`serve` and `predict` as commands: in-process against the conformance server, and as a real
`python -m kerasflow.serving serve` process that stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from kerasflow.serving.__main__ import main
from tests.serving_fixtures import digits_batch, free_port, publish, table_batch

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def run_predict(capsys, *argv: str) -> tuple[int, dict | None, str]:
    code = main(["predict", "--json", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


def test_predict_sends_json_rows_over_rest_and_grpc(conformance, tmp_path, capsys, reference):
    images = digits_batch(3, seed=12)
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(images.reshape(3, 64).tolist()))
    expected = reference(conformance.exports.digits_v1, {"image": images})
    for target in (["--rest", conformance.rest], ["--grpc", conformance.grpc]):
        code, out, err = run_predict(
            capsys, "--model-name", "digits", *target, "--input", str(rows), "--version", "1"
        )
        assert code == 0, err
        np.testing.assert_allclose(out["predictions"], expected, rtol=1e-6, atol=1e-7)


def test_predict_sends_csv_rows_as_named_inputs(conformance, tmp_path, capsys, reference):
    batch = table_batch(4, seed=13)
    lines = ["age,city"] + [
        f"{age!r},{city.decode()}"
        for age, city in zip(batch["age"][:, 0].tolist(), batch["city"][:, 0], strict=True)
    ]
    rows = tmp_path / "rows.csv"
    rows.write_text("\n".join(lines) + "\n")
    code, out, err = run_predict(
        capsys, "--model-name", "table", "--grpc", conformance.grpc, "--input", str(rows)
    )
    assert code == 0, err
    np.testing.assert_allclose(
        out["predictions"], reference(conformance.exports.table, batch), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model-name", "nope", "--rest", "{rest}"], "server refused the request (404)"),
        (["--model-name", "digits", "--grpc", "{grpc}", "--version", "9"], "(NOT_FOUND)"),
        (["--model-name", "digits", "--rest", "http://127.0.0.1:{free}"], "cannot reach"),
        (["--model-name", "digits", "--rest", "127.0.0.1:8501"], "wants an http:// or https://"),
        (
            ["--model-name", "digits", "--rest", "{rest}", "--signature-name", "x"],
            "has no signature 'x'",
        ),
    ],
)
def test_predict_errors_are_one_line_and_exit_2(conformance, tmp_path, capsys, argv, message):
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps(digits_batch(1).reshape(1, 64).tolist()))
    values = {"rest": conformance.rest, "grpc": conformance.grpc, "free": free_port()}
    code, _, err = run_predict(capsys, *[a.format(**values) for a in argv], "--input", str(rows))
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert err.count("\n") == 1


def test_serve_reports_a_bad_config_as_one_line_and_exit_2(tmp_path, capsys):
    assert main(["serve", "--model_base_path", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


class Process:
    """A `python -m kerasflow.serving ...` subprocess whose stdout is read line by line."""

    def __init__(self, *argv: str):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kerasflow.serving", *argv],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, contains: str, timeout: float = 120.0) -> str:
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"no line with {contains!r}; output: {''.join(self.output)[-3000:]}")
            if contains in line:
                return line

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def test_serve_process_answers_and_finishes_in_flight_requests_on_sigterm(
    serving_exports, tmp_path
):
    base = tmp_path / "models" / "digits"
    publish(serving_exports.digits_v1, base, 1)
    rest_port = free_port()
    # A long batch timeout keeps a lone request in flight while SIGTERM arrives.
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 4000000 }\n")
    server = Process(
        "serve",
        "--port=0",
        f"--rest_api_port={rest_port}",
        "--model_name=digits",
        f"--model_base_path={base}",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
    )
    try:
        ready = server.wait_for_line("kerasflow serve: ready")
        assert f"REST on http://127.0.0.1:{rest_port}" in ready
        assert "models: digits" in ready
        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps(digits_batch(2).reshape(2, 64).tolist()))
        client = subprocess.run(
            [
                sys.executable,
                "-m",
                "kerasflow.serving",
                "predict",
                "--json",
                "--model-name",
                "digits",
                "--rest",
                f"http://127.0.0.1:{rest_port}",
                "--input",
                str(rows),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        predictions = json.loads(client.stdout)["predictions"]
        assert np.array(predictions).shape == (2, 10)

        answers: list[requests.Response | Exception] = []

        def in_flight() -> None:
            try:
                answers.append(
                    requests.post(
                        f"http://127.0.0.1:{rest_port}/v1/models/digits:predict",
                        json={"instances": digits_batch(1).tolist()},
                        timeout=60,
                    )
                )
            except Exception as exc:
                answers.append(exc)

        sender = threading.Thread(target=in_flight)
        sender.start()
        threading.Event().wait(1.5)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
        sender.join()
        server.wait_for_line("kerasflow serve: stopped", timeout=5)
        (answer,) = answers
        assert isinstance(answer, requests.Response), answer
        assert answer.status_code == 200
        assert len(answer.json()["predictions"]) == 1
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{rest_port}/v1/models/digits", timeout=5)
    finally:
        server.kill()
