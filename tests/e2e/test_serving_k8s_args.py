"""`kerasflow serve` runs with the serving container's args of each rendered k8s overlay.

Only the ports and the models.config location are replaced (a cluster's bucket cannot be read
here); every other flag is passed as the Deployment passes it to tensorflow_model_server (gcp,
local) or to `kerasflow serve` (minio).
"""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.compile.test_manifests import OVERLAYS, render, serving_container
from tests.e2e.test_serving_cli import Process
from tests.serving_fixtures import digits_batch, free_port, publish

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def _cluster_args(overlay: str, config: str, grpc_port: int, rest_port: int) -> list[str]:
    docs = render(overlay)
    container = serving_container(docs)
    # The monitoring config the pod mounts from its ConfigMap, as a local file.
    (monitoring,) = [d for d in docs if d["metadata"]["name"].startswith("tf-serving-monitoring")]
    local_monitoring = Path(config).with_name("monitoring.config")
    local_monitoring.write_text(monitoring["data"]["monitoring.config"])
    replaced = {
        "--port": str(grpc_port),
        "--rest_api_port": str(rest_port),
        "--model_config_file": config,
        "--monitoring_config_file": str(local_monitoring),
    }
    args = []
    for arg in container["args"]:
        name, _, value = arg.partition("=")
        args.append(f"{name}={replaced[name]}" if name in replaced else arg)
    assert {a.partition("=")[0] for a in args} >= set(replaced), container["args"]
    return args


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_deployment_args_serve_a_pinned_version(overlay, serving_exports, tmp_path):
    base = tmp_path / "models" / "digits"
    publish(serving_exports.digits_v1, base, 1)
    config = tmp_path / "models" / "models.config"
    pinned = (
        "config { name: 'digits' base_path: 'BASE' model_platform: 'tensorflow' "
        "model_version_policy { specific { versions: 1 } } version_labels { key: 'stable' "
        "value: 1 } }"
    )
    config.write_text("model_config_list { " + pinned.replace("BASE", str(base)) + " }\n")
    grpc_port, rest_port = free_port(), free_port()
    server = Process("serve", *_cluster_args(overlay, str(config), grpc_port, rest_port))
    try:
        server.wait_for_line("kerasflow serve: ready")
        status = requests.get(f"http://127.0.0.1:{rest_port}/v1/models/digits", timeout=10)
        assert status.json()["model_version_status"][0]["state"] == "AVAILABLE"
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.model_spec.version_label = "stable"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(digits_batch(2)))
            answer = stub.Predict(request, timeout=30)
        assert answer.model_spec.version.value == 1
        metrics = requests.get(
            f"http://127.0.0.1:{rest_port}/monitoring/prometheus/metrics", timeout=10
        )
        served = [line for line in metrics.text.splitlines() if 'api="grpc:Predict"' in line]
        assert any('model_name="digits"' in line for line in served), metrics.text
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.kill()
