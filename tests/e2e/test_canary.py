"""Canary deployment: a deploy with `canary` serves the new version beside `stable`, and
`kerasflow canary` rolls a worse canary back and promotes a good one, on requests the server
logged (or given rows), while a client sending to `stable` the whole time sees no failure; a
canary that fails to load is rolled back."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest

from kerasflow.components.deploy import core as deploy
from kerasflow.pipelines.cli import main
from kerasflow.serving import request_log
from kerasflow.serving.client import GrpcClient, RestClient
from kerasflow.serving.config import load_model_config_file
from kerasflow.serving.request_logger import RequestLogOptions
from kerasflow.serving.server import ModelServer, ServerOptions
from kerasflow.tracking import canary_config, registry, runs
from tests.serving_fixtures import publish, publish_corrupt, wait_for

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e

MODEL = "digits"


@pytest.fixture(scope="module")
def digit_models(tmp_path_factory):
    """Exports of three small digit classifiers: two trained well (different seeds), one on
    shuffled labels; and test rows none of them saw."""
    import keras
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    train_x, train_y, test_x = x[:1400], y[:1400], x[1400:]
    root = tmp_path_factory.mktemp("canary-models")
    exports = {}
    for name, seed, labels in [
        ("stable", 0, train_y),
        ("good", 1, train_y),
        ("worse", 2, np.random.default_rng(0).permutation(train_y)),
    ]:
        keras.utils.set_random_seed(seed)
        pixels = keras.Input((64,), name="pixels")
        hidden = keras.layers.Dense(32, activation="relu")(pixels)
        model = keras.Model(pixels, keras.layers.Dense(10, activation="softmax")(hidden))
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(train_x, labels, epochs=15, batch_size=64, verbose=0)
        model.export(str(root / name), verbose=False)
        exports[name] = root / name
    return exports, test_x


class Traffic:
    """A client that keeps asking `stable` for predictions, over gRPC and REST in turn."""

    def __init__(self, server: ModelServer, rows: np.ndarray):
        self.clients = [GrpcClient(server.grpc_target), RestClient(server.rest_url)]
        self.rows, self.ok, self.failures = rows, 0, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            row = self.rows[i % len(self.rows)][None, :]
            try:
                self.clients[i % 2].predict_outputs(MODEL, {"pixels": row}, label="stable")
                self.ok += 1
            except Exception as exc:
                self.failures.append(repr(exc))
            i += 1

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def canary(*argv: str) -> int:
    # Latency is left out of the judgement here: the tests never depend on timing.
    limits = ["--max-latency-ratio", "1000", "--min-agreement", "0.85"]
    return main(["canary", "--model-name", MODEL, *limits, *argv])


def test_a_worse_canary_is_rolled_back_and_a_good_one_promoted_without_dropping_requests(
    digit_models, tmp_path, capsys
):
    exports, test_x = digit_models
    uri = os.environ["MLFLOW_TRACKING_URI"]
    serving, logs = tmp_path / "serving", tmp_path / "request-logs"
    parent = runs.find_or_create_pipeline_run(uri, "canary", "canary-run")

    def deploy_canary(name: str) -> int:
        return deploy.publish(exports[name], str(serving), MODEL, uri, parent, {}, canary=True)[0]

    assert deploy_canary("stable") == 1  # nothing served yet: a plain pin, and the champion
    config = str(serving / registry.CONFIG_FILE)
    options = ServerOptions(
        models=load_model_config_file(config),
        grpc_port=0,
        rest_port=0,
        poll_seconds=0.2,
        config_file=config,
        config_poll_seconds=0.2,
        request_log=RequestLogOptions(str(logs), max_seconds=0.3),
    )
    common = ["--serving-dir", str(serving), "--tracking-uri", uri, "--wait-seconds", "60"]
    with ModelServer(options) as server:
        watcher = GrpcClient(server.grpc_target)
        assert deploy_canary("worse") == 2
        assert registry.served_versions(str(serving), MODEL) == ([1, 2], {"stable": 1})
        assert registry.get_champion(uri, MODEL).serving_version == 1
        wait_for(lambda: watcher.label_version(MODEL, "stable") == 1, what="stable label")
        with Traffic(server, test_x) as traffic:
            wait_for(
                lambda: len(list(request_log.iter_records(str(logs), MODEL))) >= 40,
                what="logged requests",
            )
            before = traffic.ok
            code = canary("--requests", str(logs), "--grpc", server.grpc_target, *common)
            out = capsys.readouterr().out
            assert code == 0, out
            assert "rolled back (missed: agreement" in out
            assert traffic.ok > before  # requests went on during the trial and the swap
            assert registry.served_versions(str(serving), MODEL) == ([1], {"stable": 1})
            assert registry.get_champion(uri, MODEL).serving_version == 1
            wait_for(lambda: watcher.version_state(MODEL, 2) == "END", what="canary unloaded")

            assert deploy_canary("good") == 3
            rows = tmp_path / "rows.json"
            rows.write_text(json.dumps(test_x[:60].tolist()))
            before = traffic.ok
            code = canary("--input", str(rows), "--rest", server.rest_url, *common)
            out = capsys.readouterr().out
            assert code == 0, out
            assert "promoted; version 3 is stable and champion" in out
            assert traffic.ok > before
            wait_for(lambda: watcher.version_state(MODEL, 1) == "END", what="old stable unloaded")
            after_swap = traffic.ok
            wait_for(lambda: traffic.ok > after_swap + 20, what="requests after the swap")
        assert traffic.failures == []
    assert registry.served_versions(str(serving), MODEL) == ([3], {"stable": 3})
    assert registry.get_champion(uri, MODEL).serving_version == 3

    import mlflow

    found = mlflow.search_runs(
        experiment_names=["kerasflow"], filter_string="tags.`kerasflow.model_name` = 'digits'"
    )
    decisions = dict(
        zip(found["params.canary_version"], found["tags.kerasflow.canary_decision"], strict=True)
    )
    assert decisions == {"2": "rolled_back", "3": "promoted"}
    worse = found[found["params.canary_version"] == "2"].iloc[0]
    assert worse["metrics.agreement"] < 0.5 and worse["metrics.canary_errors"] == 0
    good = found[found["params.canary_version"] == "3"].iloc[0]
    assert good["metrics.agreement"] >= 0.85 and good["metrics.requests"] == 60


def test_a_canary_that_fails_to_load_is_rolled_back(serving_exports, tmp_path, capsys):
    serving = tmp_path / "serving"
    publish(serving_exports.digits_v1, serving / "plain", 1)
    registry.pin_serving_version(str(serving), "plain", 1)
    publish_corrupt(serving / "plain", 2)
    assert canary_config.stage(str(serving), "plain", 2)
    config = str(serving / registry.CONFIG_FILE)
    with ModelServer(
        ServerOptions(
            models=load_model_config_file(config),
            grpc_port=0,
            rest_port=0,
            poll_seconds=0.2,
            config_file=config,
            config_poll_seconds=0.2,
        )
    ) as server:
        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps(np.zeros((2, 8, 8, 1)).tolist()))
        argv = ["canary", "--model-name", "plain", "--input", str(rows), "--rest", server.rest_url]
        assert main([*argv, "--serving-dir", str(serving), "--wait-seconds", "60"]) == 0
        assert "rolled back (missed: canary version 2 failed to load" in capsys.readouterr().out
        assert registry.served_versions(str(serving), "plain") == ([1], {"stable": 1})
