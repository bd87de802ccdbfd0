"""Fixtures for the serving tests: tiny exported models, version publishing, running servers.

Test modules load this with `pytest_plugins = ["tests.serving_fixtures"]` and import its helpers,
so pytest sees it imported before it registers it as a plugin; PYTEST_DONT_REWRITE keeps pytest
from warning that it cannot rewrite asserts here (there are none). Models are built and exported
once per session; servers bind free ports on 127.0.0.1 and are always stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from kerasflow.serving.batching import BatchingOptions
from kerasflow.serving.config import ALL, ModelConfig, VersionPolicy
from kerasflow.serving.server import ModelServer, ServerOptions

CITIES = ["paris", "rome", "oslo"]
# Small on purpose: the conformance server refuses anything bigger with 413/RESOURCE_EXHAUSTED.
MAX_REQUEST_BYTES = 256 << 10


@dataclasses.dataclass(frozen=True)
class Exports:
    """Exported SavedModel folders (not yet published as versions)."""

    digits_v1: Path
    digits_v2: Path
    table: Path
    pair: Path
    labelled: Path


def _build_digits(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((8, 8, 1), name="image")
    x = keras.layers.Conv2D(4, 3, activation="relu")(image)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    return keras.Model(image, out)


def _build_table(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    age = keras.Input((1,), name="age")
    city = keras.Input((1,), dtype="string", name="city")
    onehot = keras.layers.StringLookup(vocabulary=CITIES, output_mode="one_hot")(city)
    x = keras.layers.Concatenate()([age, onehot])
    x = keras.layers.Dense(4, activation="relu")(x)
    out = keras.layers.Dense(1)(x)
    return keras.Model({"age": age, "city": city}, out)


def _build_pair(seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    inputs = {"x1": keras.Input((1,), name="x1"), "x2": keras.Input((2,), name="x2")}
    x = keras.layers.Concatenate()([inputs["x1"], inputs["x2"]])
    out = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inputs, out)


DIGIT_NAMES = [f"digit-{i}" for i in range(10)]


def _export_labelled(path: Path) -> None:
    """Digits with a second signature, `classify`, that also answers with class names."""
    import keras
    import tensorflow as tf

    model = _build_digits(2)
    names = tf.constant(DIGIT_NAMES)
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = {"image": tf.TensorSpec((None, 8, 8, 1), tf.float32, name="image")}

    def serve(inputs):
        return {"output_0": model(inputs["image"], training=False)}

    def classify(inputs):
        scores = model(inputs["image"], training=False)
        return {"scores": scores, "classes": tf.gather(names, tf.argmax(scores, axis=1))}

    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.add_endpoint("classify", classify, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


@pytest.fixture(scope="session")
def serving_exports(tmp_path_factory) -> Exports:
    """Four tiny exports: digits (two weight sets), a string+number table, a dict of numbers."""
    root = tmp_path_factory.mktemp("exports")
    paths = {}
    for name, build, seed in [
        ("digits_v1", _build_digits, 0),
        ("digits_v2", _build_digits, 1),
        ("table", _build_table, 0),
        ("pair", _build_pair, 0),
    ]:
        build(seed).export(str(root / name), verbose=False)
        paths[name] = root / name
    _export_labelled(root / "labelled")
    return Exports(**paths, labelled=root / "labelled")


def publish(src: Path, base: Path, version: int) -> Path:
    """Publishes `src` as `base/version` the way kerasflow deploys: hidden copy, then rename."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=base))
    shutil.copytree(src, tmp, dirs_exist_ok=True)
    os.rename(tmp, base / str(version))
    return base / str(version)


def publish_corrupt(base: Path, version: int) -> Path:
    """Publishes a version whose saved_model.pb is garbage."""
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=base))
    (tmp / "saved_model.pb").write_bytes(b"\x08\x01garbage, not a SavedModel" * 10)
    os.rename(tmp, base / str(version))
    return base / str(version)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(models: list[ModelConfig], **options) -> Iterator[ModelServer]:
    """A started ModelServer on free ports; stopped on exit whatever happens."""
    options.setdefault("grpc_port", 0)
    options.setdefault("rest_port", 0)
    options.setdefault("poll_seconds", 0.2)
    options.setdefault("grace_seconds", 5.0)
    server = ModelServer(ServerOptions(models=models, **options))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(predicate: Callable[[], object], timeout: float = 60.0, what: str = "condition"):
    """Polls `predicate` until it returns something truthy; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def reference(serving_exports) -> Callable[[Path, dict], np.ndarray]:
    """Runs an export's serving signature directly with TensorFlow: the expected answers."""
    import tensorflow as tf

    loaded = {}

    def run(export: Path, inputs: dict) -> np.ndarray:
        if export not in loaded:
            loaded[export] = tf.saved_model.load(str(export)).signatures["serving_default"]
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        return loaded[export](**tensors)["output_0"].numpy()

    return run


def digits_batch(rows: int, seed: int = 0) -> np.ndarray:
    """Random 8x8x1 images."""
    return np.random.default_rng(seed).random((rows, 8, 8, 1), dtype=np.float32)


def table_batch(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Ages and city names (one unknown city included)."""
    rng = np.random.default_rng(seed)
    cities = np.array([[c.encode()] for c in (CITIES + ["lima"]) * rows][:rows], dtype=object)
    return {"age": rng.random((rows, 1), dtype=np.float32) * 80, "city": cities}


def pair_batch(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Two numeric inputs of different widths."""
    rng = np.random.default_rng(seed)
    return {
        "x1": rng.random((rows, 1), dtype=np.float32),
        "x2": rng.random((rows, 2), dtype=np.float32),
    }


@dataclasses.dataclass
class Conformance:
    """The shared conformance server and what it serves."""

    server: ModelServer
    base: Path
    exports: Exports

    @property
    def rest(self) -> str:
        return self.server.rest_url

    @property
    def grpc(self) -> str:
        return self.server.grpc_target


@pytest.fixture(scope="session")
def conformance(serving_exports, tmp_path_factory) -> Iterator[Conformance]:
    """One server for the protocol tests: digits v1+v2 (labels stable=1, canary=2), table, pair,
    and labelled (a second signature with string outputs)."""
    base = tmp_path_factory.mktemp("models")
    publish(serving_exports.digits_v1, base / "digits", 1)
    publish(serving_exports.digits_v2, base / "digits", 2)
    publish(serving_exports.table, base / "table", 1)
    publish(serving_exports.pair, base / "pair", 1)
    publish(serving_exports.labelled, base / "labelled", 1)
    models = [
        ModelConfig(
            "digits",
            str(base / "digits"),
            policy=VersionPolicy(ALL),
            labels={"stable": 1, "canary": 2},
        ),
        ModelConfig("table", str(base / "table")),
        ModelConfig("pair", str(base / "pair")),
        ModelConfig("labelled", str(base / "labelled")),
    ]
    with running_server(
        models,
        max_request_bytes=MAX_REQUEST_BYTES,
        batching=BatchingOptions(max_batch_size=16),
    ) as server:
        yield Conformance(server, base, serving_exports)


@pytest.fixture(scope="session")
def grpc_stubs(conformance):
    """(PredictionService stub, ModelService stub) on one channel to the conformance server."""
    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(conformance.grpc)
    try:
        yield (
            prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel),
        )
    finally:
        channel.close()
