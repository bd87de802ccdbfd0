"""Version lifecycle on real servers: hot swaps under load, bad versions, warmup, batching."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasflow.serving.batching import BatchingOptions
from kerasflow.serving.config import ModelConfig
from kerasflow.serving.tensors import from_ndarray
from kerasflow.serving.validation import write_warmup_requests
from kerasflow.serving.warmup import write_warmup_file
from tests.serving_fixtures import (
    digits_batch,
    publish,
    publish_corrupt,
    running_server,
    wait_for,
)

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def grpc_predict(stub, images: np.ndarray):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["image"].CopyFrom(tf.make_tensor_proto(images))
    return stub.Predict(request, timeout=30)


def version_states(server) -> dict[int, tuple[str, str]]:
    body = requests.get(f"{server.rest_url}/v1/models/digits", timeout=30).json()
    return {
        int(s["version"]): (s["state"], s["status"]["error_message"])
        for s in body["model_version_status"]
    }


class Load:
    """Threads that keep sending predicts over gRPC and REST and record every outcome."""

    def __init__(self, server, threads: int = 4):
        self.server = server
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.versions: list[int] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in range(threads)]

    def run(self, index: int) -> None:
        images = digits_batch(1 + index % 3, seed=index)
        channel = grpc.insecure_channel(self.server.grpc_target)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        session = requests.Session()
        try:
            while not self.stop.is_set():
                try:
                    if index % 2:
                        response = grpc_predict(stub, images)
                        with self.lock:
                            self.versions.append(response.model_spec.version.value)
                    else:
                        answer = session.post(
                            f"{self.server.rest_url}/v1/models/digits:predict",
                            json={"instances": images.tolist()},
                            timeout=30,
                        )
                        if answer.status_code != 200:
                            raise RuntimeError(f"{answer.status_code} {answer.text}")
                        assert len(answer.json()["predictions"]) == len(images)
                except Exception as exc:
                    with self.lock:
                        self.failures.append(repr(exc))
        finally:
            channel.close()
            session.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def seen(self, version: int) -> bool:
        with self.lock:
            return version in self.versions

    def count(self) -> int:
        with self.lock:
            return len(self.versions)


def test_a_new_version_takes_over_under_load_without_a_single_failed_request(
    serving_exports, tmp_path
):
    base = tmp_path / "digits"
    publish(serving_exports.digits_v1, base, 1)
    with running_server([ModelConfig("digits", str(base))]) as server, Load(server) as load:
        wait_for(lambda: load.count() > 20, what="traffic on version 1")
        assert load.seen(1)
        publish(serving_exports.digits_v2, base, 2)
        wait_for(lambda: load.seen(2), what="version 2 to answer")
        settled = load.count()
        wait_for(lambda: load.count() > settled + 20, what="traffic after the swap")
        # Requests that picked version 1 just before the swap may answer a little later.
        assert set(load.versions[-10:]) == {2}
        assert version_states(server) == {2: ("AVAILABLE", ""), 1: ("END", "")}
    assert load.failures == []


def test_a_corrupt_version_is_reported_and_the_previous_version_keeps_serving(
    serving_exports, tmp_path, reference
):
    base = tmp_path / "digits"
    publish(serving_exports.digits_v1, base, 1)
    images = digits_batch(2, seed=9)
    with running_server([ModelConfig("digits", str(base))]) as server:
        publish_corrupt(base, 2)
        states = wait_for(
            lambda: (s := version_states(server)).get(2, ("",))[0] == "END" and s,
            what="version 2 to fail",
        )
        assert states[1] == ("AVAILABLE", "")
        assert "saved_model.pb" in states[2][1]
        status = requests.get(f"{server.rest_url}/v1/models/digits/versions/2", timeout=30).json()
        assert status["model_version_status"][0]["status"]["error_code"] == "DATA_LOSS"
        answer = requests.post(
            f"{server.rest_url}/v1/models/digits:predict",
            json={"instances": images.tolist()},
            timeout=30,
        )
        assert answer.status_code == 200
        np.testing.assert_allclose(
            answer.json()["predictions"],
            reference(serving_exports.digits_v1, {"image": images}),
            rtol=1e-6,
            atol=1e-7,
        )
        # A good version published later still loads.
        publish(serving_exports.digits_v2, base, 3)
        wait_for(
            lambda: version_states(server).get(3, ("",))[0] == "AVAILABLE", what="version 3 to load"
        )
        stub = prediction_service_pb2_grpc.PredictionServiceStub(
            channel := grpc.insecure_channel(server.grpc_target)
        )
        assert grpc_predict(stub, images).model_spec.version.value == 3
        channel.close()


def test_warmup_records_are_replayed_and_a_failing_one_fails_the_load(serving_exports, tmp_path):
    base = tmp_path / "digits"
    good = publish(serving_exports.digits_v1, tmp_path / "staging", 1)
    path = write_warmup_requests(good, "digits", {"image": digits_batch(3)}, n=2)
    assert path == good / "assets.extra" / "tf_serving_warmup_requests"
    publish(good, base, 1)
    bad = publish(serving_exports.digits_v2, tmp_path / "staging", 2)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "digits"
    request.inputs["pixels"].CopyFrom(from_ndarray(digits_batch(1)))
    write_warmup_file(bad, [request])
    with running_server([ModelConfig("digits", str(base))]) as server:
        assert version_states(server) == {1: ("AVAILABLE", "")}
        publish(bad, base, 2)
        wait_for(lambda: 2 in version_states(server), what="version 2 to be tried")
        state, message = wait_for(
            lambda: version_states(server)[2][0] == "END" and version_states(server)[2],
            what="version 2 to fail its warmup",
        )
        assert "warmup request 0 failed" in message and "pixels" in message
        assert server.manager.get_servable("digits").version == 1


def test_concurrent_requests_of_mixed_sizes_are_batched_and_each_gets_its_own_answer(
    serving_exports, tmp_path, reference
):
    base = tmp_path / "digits"
    publish(serving_exports.digits_v1, base, 1)
    options = {"batching": BatchingOptions(max_batch_size=16, batch_timeout_micros=20_000)}
    results: dict[int, np.ndarray] = {}
    errors: list[str] = []
    inputs = {i: digits_batch(1 + i % 4, seed=100 + i) for i in range(48)}
    with running_server([ModelConfig("digits", str(base))], **options) as server:
        start = threading.Barrier(8)

        def client(worker: int) -> None:
            channel = grpc.insecure_channel(server.grpc_target)
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            session = requests.Session()
            start.wait()
            for i in range(worker, len(inputs), 8):
                try:
                    if i % 2:
                        out = tf.make_ndarray(grpc_predict(stub, inputs[i]).outputs["output_0"])
                    else:
                        answer = session.post(
                            f"{server.rest_url}/v1/models/digits:predict",
                            json={"inputs": inputs[i].tolist()},
                            timeout=30,
                        )
                        out = np.array(answer.json()["outputs"], dtype=np.float32)
                    results[i] = out
                except Exception as exc:
                    errors.append(repr(exc))
            channel.close()
            session.close()

        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stats = server.manager.get_servable("digits").signature("serving_default").stats
    assert errors == []
    assert stats.requests == len(inputs)
    assert stats.max_requests_in_batch > 1
    assert stats.max_rows_in_batch <= 16
    for i, images in inputs.items():
        expected = reference(serving_exports.digits_v1, {"image": images})
        assert results[i].shape == expected.shape
        np.testing.assert_allclose(results[i], expected, rtol=1e-5, atol=1e-6)


def test_reload_config_request_serves_a_new_model_list(serving_exports, tmp_path):
    publish(serving_exports.digits_v1, tmp_path / "digits", 1)
    publish(serving_exports.pair, tmp_path / "pair", 1)
    with running_server([ModelConfig("digits", str(tmp_path / "digits"))]) as server:
        channel = grpc.insecure_channel(server.grpc_target)
        request = model_management_pb2.ReloadConfigRequest()
        entry = request.config.model_config_list.config.add()
        entry.name, entry.base_path, entry.model_platform = (
            "pair",
            str(tmp_path / "pair"),
            "tensorflow",
        )
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        assert stub.HandleReloadConfigRequest(request, timeout=60).status.error_code == 0
        assert requests.get(f"{server.rest_url}/v1/models/pair", timeout=30).status_code == 200
        assert requests.get(f"{server.rest_url}/v1/models/digits", timeout=30).status_code == 404
        entry.model_platform = "onnx"
        with pytest.raises(grpc.RpcError) as info:
            stub.HandleReloadConfigRequest(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        channel.close()


def test_a_rewritten_model_config_file_is_applied_while_serving(serving_exports, tmp_path):
    from kerasflow.runtime.fileio import write_bytes_atomic
    from kerasflow.serving.config import load_model_config_file

    base = tmp_path / "digits"
    publish(serving_exports.digits_v1, base, 1)
    publish(serving_exports.digits_v2, base, 2)
    config = tmp_path / "models.config"

    def write_config(policy: str, labels: str) -> None:
        write_bytes_atomic(
            config,
            (
                f"model_config_list {{ config {{ name: 'digits' base_path: '{base}' "
                f"model_platform: 'tensorflow' model_version_policy {{ {policy} }} {labels} }} }}"
            ).encode(),
        )

    write_config("specific { versions: 1 }", "")
    # The new config labels version 2 before it has loaded, which TF Serving (and this server)
    # accepts only with --allow_version_labels_for_unavailable_models, as the Deployment sets.
    with running_server(
        load_model_config_file(str(config)),
        config_file=str(config),
        config_poll_seconds=0.1,
        allow_labels_for_unavailable=True,
    ) as server:
        assert version_states(server) == {1: ("AVAILABLE", "")}
        write_config("all {}", "version_labels { key: 'canary' value: 2 }")
        wait_for(
            lambda: version_states(server) == {2: ("AVAILABLE", ""), 1: ("AVAILABLE", "")},
            what="the new config to apply",
        )
        answer = requests.post(
            f"{server.rest_url}/v1/models/digits/labels/canary:predict",
            json={"instances": digits_batch(1).tolist()},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
