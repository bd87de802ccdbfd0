"""Prometheus metrics on the REST port, read back with prometheus-client's own parser."""

from __future__ import annotations

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from kerasflow.serving.config import ModelConfig
from kerasflow.serving.metrics import DEFAULT_PATH
from tests.serving_fixtures import digits_batch, publish, running_server

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def _samples(rest_url: str) -> list:
    answer = requests.get(f"{rest_url}{DEFAULT_PATH}", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(answer.text) for s in family.samples]


def _value(samples, name: str, **labels) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_request_counts_latencies_and_versions_match_the_traffic(serving_exports, tmp_path):
    import tensorflow as tf

    publish(serving_exports.digits_v1, tmp_path / "digits", 1)
    models = [ModelConfig("digits", str(tmp_path / "digits"))]
    with running_server(models, prometheus_path=DEFAULT_PATH) as server:
        url = f"{server.rest_url}/v1/models"
        for _ in range(3):
            ok = requests.post(
                f"{url}/digits:predict", json={"instances": digits_batch(2).tolist()}, timeout=30
            )
            assert ok.status_code == 200
        bad = requests.post(f"{url}/digits:predict", json={"instances": "x"}, timeout=30)
        assert bad.status_code == 400
        assert requests.post(f"{url}/nope:predict", json={"instances": []}).status_code == 404
        assert requests.get(f"{url}/digits", timeout=10).status_code == 200  # not a request

        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "digits"
            request.inputs["image"].CopyFrom(tf.make_tensor_proto(digits_batch(1)))
            for _ in range(2):
                stub.Predict(request, timeout=30)
            request.model_spec.name = "missing"
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(request, timeout=30)
            assert info.value.code() == grpc.StatusCode.NOT_FOUND

        samples = _samples(server.rest_url)

    requests_total = "kerasflow_serving_requests_total"
    rest_ok = {"api": "rest:predict", "status": "OK"}
    assert _value(samples, requests_total, model_name="digits", version="1", **rest_ok) == 3
    assert _value(samples, requests_total, signature_name="serving_default", **rest_ok) == 3
    assert _value(samples, requests_total, api="rest:predict", status="INVALID_ARGUMENT") == 1
    assert _value(samples, requests_total, model_name="nope", status="NOT_FOUND") == 1
    grpc_ok = {"api": "grpc:Predict", "status": "OK", "version": "1"}
    assert _value(samples, requests_total, model_name="digits", **grpc_ok) == 2
    assert _value(samples, requests_total, model_name="missing", status="NOT_FOUND") == 1
    assert _value(samples, requests_total) == 8
    latency = "kerasflow_serving_request_latency_seconds_count"
    assert _value(samples, latency, model_name="digits", api="rest:predict", status="OK") == 3
    assert _value(samples, latency) == 8
    assert (
        _value(
            samples,
            "kerasflow_serving_model_version_state",
            model_name="digits",
            version="1",
            state="AVAILABLE",
        )
        == 1
    )


def test_no_metrics_endpoint_unless_monitoring_is_configured(serving_exports, tmp_path):
    publish(serving_exports.digits_v1, tmp_path / "digits", 1)
    with running_server([ModelConfig("digits", str(tmp_path / "digits"))]) as server:
        assert requests.get(f"{server.rest_url}{DEFAULT_PATH}", timeout=10).status_code == 404
