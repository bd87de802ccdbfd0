"""`kerasflow serve --request_log_uri`: sampled predict requests land in the log folder in the
request log's format, from REST and gRPC, and are all there once the server stopped."""

from __future__ import annotations

import signal

import grpc
import numpy as np
import pytest
import requests

from kerasflow.serving import request_log
from tests.e2e.test_serving_cli import Process
from tests.serving_fixtures import digits_batch, free_port, publish

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def grpc_predict(target: str, images: np.ndarray) -> np.ndarray:
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from kerasflow.serving.tensors import from_ndarray, to_ndarray

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "digits"
        from_ndarray(images, out=request.inputs["image"])
        return to_ndarray(stub.Predict(request, timeout=60).outputs["output_0"])


def test_served_requests_are_logged_in_the_documented_format(serving_exports, tmp_path):
    base = tmp_path / "models" / "digits"
    publish(serving_exports.digits_v1, base, 1)
    logs = tmp_path / "request-logs"
    rest_port, grpc_port = free_port(), free_port()
    server = Process(
        "serve",
        f"--port={grpc_port}",
        f"--rest_api_port={rest_port}",
        "--model_name=digits",
        f"--model_base_path={base}",
        f"--request_log_uri={logs}",
        "--request_log_max_bytes=4000",  # a few records per file: rotation happens
    )
    sent: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        server.wait_for_line("kerasflow serve: ready")
        for seed in range(3):
            images = digits_batch(1 + seed, seed=seed)
            answer = requests.post(
                f"http://127.0.0.1:{rest_port}/v1/models/digits:predict",
                json={"inputs": {"image": images.tolist()}},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            sent.append((images, np.array(answer.json()["outputs"])))
        for seed in (7, 8):
            images = digits_batch(2, seed=seed)
            sent.append((images, grpc_predict(f"127.0.0.1:{grpc_port}", images)))
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.kill()
    folder = logs / "digits"
    names = sorted(p.name for p in folder.iterdir())
    assert names and all(
        n.startswith(request_log.PREFIX) and n.endswith(request_log.SUFFIX) for n in names
    ), names
    assert len(names) > 1  # rotated by size
    records = list(request_log.iter_records(str(logs), "digits"))
    assert len(records) == len(sent)
    by_input = {np.asarray(r["inputs"]["image"], np.float32).tobytes(): r for r in records}
    for images, outputs in sent:
        record = by_input[images.tobytes()]
        assert record["model"] == "digits" and record["version"] == 1
        assert record["method"] == "predict" and record["signature"] == "serving_default"
        assert record["time"].endswith("Z")
        np.testing.assert_allclose(record["outputs"]["output_0"], outputs, rtol=1e-6)
    stacked = request_log.stack_inputs(records)
    assert stacked["image"].shape == (sum(len(i) for i, _ in sent), 8, 8, 1)
