"""Final training: best weights restored, schedules, refit on train+val, warm start."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from kerasflow import constants as C
from kerasflow.components.train import core
from kerasflow.data.feeds import DataFeed, load_training_arrays
from tests.unit.test_tuning import make_tabular_bundle

pytestmark = pytest.mark.unit

HPARAMS = {
    "family": "mlp",
    "num_layers": 1,
    "units": 8,
    "activation": "relu",
    "dropout": 0.0,
    "l1": 0.0,
    "l2": 0.0,
    "batch_norm": False,
    "initializer": "glorot_uniform",
    "optimizer": "adam",
    "learning_rate": 0.01,
}


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    path = make_tabular_bundle(tmp_path_factory.mktemp("train") / "b", rows=120, seed=7)
    return load_training_arrays(str(path), str(path))


def test_best_epoch_weights_are_restored_with_a_cosine_schedule(arrays):
    train_ds, val_ds = DataFeed(arrays, 1).datasets(16)
    model, history = core.fit_final(
        arrays.meta,
        train_ds,
        val_ds,
        HPARAMS,
        epochs=6,
        patience=5,
        seed=1,
        lr_schedule="cosine",
    )
    schedule = model.optimizer.get_config()["learning_rate"]
    assert schedule["class_name"] == "CosineDecay"
    best = int(history["best_epoch"][0])
    assert history["val_accuracy"][best - 1] == max(history["val_accuracy"])
    _, accuracy = model.evaluate(val_ds, verbose=0)
    assert accuracy == pytest.approx(max(history["val_accuracy"]), abs=1e-6)


def test_refit_on_train_and_val_runs_the_best_epoch_count(arrays):
    merged = DataFeed(arrays, 1).merged(16, 1)
    assert int(merged.cardinality()) == -(-(len(arrays.train_y) + len(arrays.val_y)) // 16)
    _, history = core.refit_on_all(
        arrays.meta, merged, HPARAMS, epochs=3, seed=1, lr_schedule="exponential"
    )
    assert len(history["refit_loss"]) == 3 and "refit_val_loss" not in history


def register_champions(uri: str, arrays, tmp_path, count: int) -> list:
    """`count` models registered and promoted in turn (v1 first); returns the models."""
    from kerasflow.tracking import registry

    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("owners")).info.run_id
    models = []
    for version in range(1, count + 1):
        model = core.build_final_model(arrays.meta, HPARAMS)
        folder = tmp_path / f"v{version}"
        folder.mkdir()
        model.save(folder / C.KERAS_MODEL_FILE)
        tags = {registry.SERVING_VERSION_TAG: version}
        assert registry.register_version(uri, "m", str(folder), run, tags) == version
        registry.promote(uri, "m", version)
        models.append(model)
    return models


def test_warm_start_fine_tunes_the_registry_champion_after_a_rollback(arrays, tmp_path):
    import os

    from kerasflow.tracking import registry

    uri = os.environ["MLFLOW_TRACKING_URI"]
    assert core.find_champion(uri, "m") is None  # no registered model: train from scratch
    v1, v2 = register_champions(uri, arrays, tmp_path, 2)
    assert core.find_champion(uri, "m")[0].registry_version == 2
    registry.rollback(uri, "m")  # v2 is still the newest version, but v1 serves again

    champion, path = core.find_champion(uri, "m")
    assert (champion.registry_version, champion.serving_version) == (1, 1)
    model, why_not = core.load_champion(path, arrays.meta, HPARAMS)
    assert why_not == "" and model.optimizer.learning_rate.numpy() == pytest.approx(0.001)
    for got, want in zip(model.get_weights(), v1.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not np.array_equal(model.get_weights()[0], v2.get_weights()[0])

    other = {**arrays.meta, "class_names": ["a", "b", "c"]}
    assert core.load_champion(path, other, HPARAMS)[0] is None  # does not fit this data


def test_warm_start_errors_name_the_registry_or_the_champion(arrays, tmp_path, monkeypatch):
    import os

    from mlflow.exceptions import MlflowException

    from kerasflow.tracking import registry

    uri = os.environ["MLFLOW_TRACKING_URI"]
    register_champions(uri, arrays, tmp_path, 1)
    # a champion whose files are gone
    client = mlflow.MlflowClient(uri)
    run = client.create_run(client.create_experiment("gone")).info.run_id
    gone = registry.register_version(uri, "m", str(tmp_path / "deleted"), run, {})
    registry.promote(uri, "m", gone)
    with pytest.raises(registry.ChampionUnavailable, match=r"champion v2 of 'm' .*downloaded"):
        core.find_champion(uri, "m")
    # a champion registered as a SavedModel only
    bare = tmp_path / "bare"
    (bare / "variables").mkdir(parents=True)
    (bare / "saved_model.pb").write_bytes(b"")
    registry.promote(uri, "m", registry.register_version(uri, "m", str(bare), run, {}))
    with pytest.raises(registry.ChampionUnavailable, match=r"champion v3 .*no model.keras"):
        core.find_champion(uri, "m")
    # a champion whose .keras file does not load
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / C.KERAS_MODEL_FILE).write_bytes(b"not a keras file")
    registry.promote(uri, "m", registry.register_version(uri, "m", str(broken), run, {}))
    champion, path = core.find_champion(uri, "m")
    with pytest.raises(registry.ChampionUnavailable, match=r"champion v4 of 'm' .*does not load"):
        core.load_champion(path, arrays.meta, HPARAMS, name=champion.describe("m"))

    class Unreachable:
        def get_model_version_by_alias(self, *_args):
            raise MlflowException("connection refused", error_code="INTERNAL_ERROR")

    monkeypatch.setattr(registry, "_client", lambda _uri: Unreachable())
    with pytest.raises(registry.RegistryUnavailable, match="connection refused"):
        core.find_champion(uri, "m")


def test_refit_fine_tunes_the_champion_again_on_train_and_val(arrays, tmp_path, monkeypatch):
    """`refit` with `warm_start`: the refit starts from the champion's weights (not the fit's,
    not a fresh model) and runs the best epoch count on train+val; the logs say so."""
    import json
    import os

    from kerasflow.tracking import runs

    uri = os.environ["MLFLOW_TRACKING_URI"]
    (champion,) = register_champions(uri, arrays, tmp_path, 1)
    bundle = make_tabular_bundle(tmp_path / "bundle", rows=120, seed=7)
    (tmp_path / "hp.json").write_text(json.dumps(HPARAMS))
    parent = runs.find_or_create_pipeline_run(uri, "refit", "kfp-refit")
    started_from = []
    refit = core.refit_on_all

    def spy(*args, **kwargs):
        start = kwargs["initial_model"]
        started_from.append([w.copy() for w in start.get_weights()] if start else None)
        model, history = refit(*args, **kwargs)
        started_from.append(model is start)
        return model, history

    monkeypatch.setattr(core, "refit_on_all", spy)
    core.run(
        settings={
            **core.TrainSettings().model_dump(),
            "model_name": "m",
            "warm_start": True,
            "refit": True,
            "final_epochs": 3,
        },
        splits_dir=str(bundle),
        train_dir=str(bundle),
        hparams_path=str(tmp_path / "hp.json"),
        model_dir=str(tmp_path / "model"),
        history_path=str(tmp_path / "history.html"),
        tracking_uri=uri,
        parent_run_id=parent,
    )
    weights, fine_tuned = started_from
    for got, want in zip(weights, champion.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert fine_tuned
    history = json.loads((tmp_path / "model" / C.HISTORY_FILE).read_text())
    assert len(history["refit_loss"]) == int(history["best_epoch"][0])
    train = mlflow.get_run(runs.find_step_run(parent, "train")).data.params
    assert train["refit"] == "true" and train["warm_started"] == "true"
    assert train["warm_start_registry_version"] == "1"


def test_label_smoothing_fits_a_classifier_on_smoothed_one_hot_targets(arrays):
    train_ds, val_ds = DataFeed(arrays, 1).datasets(16)
    model, history = core.fit_final(
        arrays.meta, train_ds, val_ds, HPARAMS, epochs=2, patience=5, seed=1, label_smoothing=0.2
    )
    assert model.loss.get_config()["label_smoothing"] == pytest.approx(0.2)
    assert len(history["val_accuracy"]) == 2
    x, y = next(iter(val_ds))
    assert y.shape.rank == 1  # the feed keeps class indices; only the fit sees one-hot rows
    probs = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
