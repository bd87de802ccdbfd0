"""Final training: best weights restored, schedules, refit on train+val, warm start."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest

from kerasflow import constants as C
from kerasflow.components.train import core
from kerasflow.data.feeds import DataFeed, load_training_arrays, merged_arrays
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
    from kerasflow.modeling import builders

    x, y = merged_arrays(arrays)
    assert len(y) == len(arrays.train_y) + len(arrays.val_y)
    merged = builders.make_dataset(x, y, 16, True, 1)
    _, history = core.refit_on_all(
        arrays.meta, merged, HPARAMS, epochs=3, seed=1, lr_schedule="exponential"
    )
    assert len(history["refit_loss"]) == 3 and "refit_val_loss" not in history


def test_warm_start_finds_and_loads_the_serving_champion(arrays, tmp_path, mlflow_store):
    serving = tmp_path / "models"
    (serving / "m" / "1").mkdir(parents=True)
    (serving / "m" / "2").mkdir()
    champion = core.build_final_model(arrays.meta, HPARAMS)
    champion.save(tmp_path / C.KERAS_MODEL_FILE)
    mlflow.set_tracking_uri(mlflow_store)
    client = mlflow.MlflowClient()
    exp = mlflow.set_experiment("warm-start").experiment_id
    old = client.create_run(
        exp, tags={C.TAG_KIND: C.KIND_PIPELINE, C.TAG_MODEL_PATH: str(serving / "m" / "2")}
    )
    train = client.create_run(
        exp, tags={"mlflow.parentRunId": old.info.run_id, C.TAG_STEP: "train"}
    )
    client.log_artifact(train.info.run_id, str(tmp_path / C.KERAS_MODEL_FILE), "model")
    client.set_terminated(train.info.run_id)
    new = client.create_run(exp, tags={C.TAG_KIND: C.KIND_PIPELINE})

    path = core.find_champion(str(serving), "m", new.info.run_id)
    assert path.endswith(C.KERAS_MODEL_FILE)
    model, why_not = core.load_champion(path, arrays.meta, HPARAMS)
    assert why_not == "" and model.optimizer.learning_rate.numpy() == pytest.approx(0.001)
    np.testing.assert_allclose(model.get_weights()[-1], champion.get_weights()[-1])

    other = {**arrays.meta, "class_names": ["a", "b", "c"]}
    assert core.load_champion(path, other, HPARAMS)[0] is None
    assert core.find_champion(str(serving), "absent", new.info.run_id) == ""


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
