"""The whole pipeline with every step in a container of the image (`--runner docker`), and the
served model from a container, queried from the host over REST and gRPC."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import mlflow
import pytest

from tests.faults import harness as h

pytestmark = pytest.mark.container
pytest_plugins = ["tests.serving_fixtures"]


def test_every_step_runs_in_a_container_and_tracks_and_deploys(image, tmp_path):
    run = h.start_run(
        tmp_path,
        "--work-dir",
        "work",
        "--runner",
        "docker",
        "--image",
        image,
        "--summary-json",
        "summary.json",
        tag="docker",
    )
    code, _seconds = run.finish(1200)
    assert code == 0, run.text()[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["model_version"] == 1 and summary["blessed"] is True
    # one container per task that ran: the seven steps and the exit handler
    assert summary["containers"] == 8
    assert (tmp_path / "work/models/kerasflow-model/1/saved_model.pb").is_file()
    client = mlflow.MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    steps = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(s.data.tags["kerasflow.step"] for s in steps) == sorted(h.STEPS)
    assert {s.info.status for s in steps} == {"FINISHED"}


def test_a_missing_image_is_one_line_before_any_step(image, tmp_path):
    done = h.kerasflow(tmp_path, "run", "--runner", "docker", "--image", "kerasflow:absent")
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("kerasflow: error: image 'kerasflow:absent' is not on this machine")
    )
    assert not (tmp_path / "kerasflow-work" / "pipeline_root").exists()


def test_sigint_stops_the_step_containers(image, tmp_path):
    run = h.start_run(tmp_path, "--work-dir", "work", "--runner", "docker", "--image", image)
    run.wait_for(h.step_started("normalize_split"), 600)
    run.signal(signal.SIGINT, group=True)
    code, _seconds = run.finish(180)
    assert code == 130, run.text()[-3000:]
    left = subprocess.run(
        ["docker", "ps", "-q", "--filter", "label=kerasflow.driver"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert left == []
    statuses = h.runs_by_status(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    assert "RUNNING" not in statuses


def test_the_served_container_answers_rest_and_grpc_and_swaps_versions(
    image, serving_exports, reference, tmp_path
):
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from tests.e2e.test_serving_grpc import predict_request
    from tests.serving_fixtures import digits_batch, free_port, publish

    base = tmp_path / "models" / "digits"
    publish(serving_exports.digits_v1, base, 1)
    rest, grpc_port = free_port(), free_port()
    name = f"kerasflow-serve-test-{os.getpid()}"
    started = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--rm",
            "--name",
            name,
            "-p",
            f"127.0.0.1:{rest}:8501",
            "-p",
            f"127.0.0.1:{grpc_port}:8500",
            "-v",
            f"{tmp_path / 'models'}:/models:ro",
            image,
            "kerasflow",
            "serve",
            "--model_name",
            "digits",
            "--model_base_path",
            "/models/digits",
            "--host",
            "0.0.0.0",
            "--rest_api_port",
            "8501",
            "--file_system_poll_wait_seconds",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{rest}/v1/models/digits"
        _wait_http(url)
        images = digits_batch(2, seed=3)
        body = json.dumps({"instances": images.tolist()}).encode()
        request = urllib.request.Request(f"{url}:predict", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as reply:
            got = np.array(json.loads(reply.read())["predictions"])
        want = reference(serving_exports.digits_v1, {"image": images})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        answer = stub.Predict(predict_request("digits", {"image": images}), timeout=30)
        assert answer.model_spec.version.value == 1
        publish(serving_exports.digits_v2, base, 2)  # deployed while it serves
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = stub.Predict(predict_request("digits", {"image": images}), timeout=30)
            if answer.model_spec.version.value == 2:
                break
            time.sleep(1)
        assert answer.model_spec.version.value == 2
        np.testing.assert_allclose(
            tf.make_ndarray(answer.outputs["output_0"]),
            reference(serving_exports.digits_v2, {"image": images}),
            rtol=1e-5,
            atol=1e-6,
        )
        bad = urllib.request.Request(f"{url}:predict", data=b"{", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=30)
        assert refused.value.code == 400 and "error" in json.loads(refused.value.read())
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def _wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")
