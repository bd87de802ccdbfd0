"""The search engine on tiny data: the four tuners, budgets, failures, k-fold, tracking."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.data.feeds import DataFeed, fold_of_groups, load_training_arrays
from kerasflow.runtime.errors import UserError
from kerasflow.tuning import tuners

pytestmark = pytest.mark.unit


def make_tabular_bundle(path: Path, rows: int = 120, seed: int = 0, copies: int = 0) -> Path:
    """A separable two-class table bundle: train (with `copies` augmented copies) and val."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64")
    frame = pd.DataFrame({**{f"x{i}": x[:, i] for i in range(3)}, "y": y})
    n_train = int(rows * 0.75)
    train = frame.iloc[:n_train].reset_index(drop=True)
    train = pd.concat([train] * (copies + 1), ignore_index=True)
    meta = {
        "modality": "tabular",
        "task": "classification",
        "label": "y",
        "class_names": ["a", "b"],
        "features": [{"name": f"x{i}", "input": f"x{i}", "kind": "numeric"} for i in range(3)],
        "normalization": {f"x{i}": {"mean": 0.0, "variance": 1.0} for i in range(3)},
        "split_sizes": {"train": n_train, "val": rows - n_train},
    }
    parts = {
        "train": artifacts.Part(frame=train),
        "val": artifacts.Part(frame=frame.iloc[n_train:].reset_index(drop=True)),
    }
    artifacts.save(path, artifacts.Bundle(meta, parts))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return make_tabular_bundle(tmp_path_factory.mktemp("tab") / "bundle")


@pytest.fixture(scope="module")
def feed(data_dir) -> DataFeed:
    return DataFeed(load_training_arrays(str(data_dir), str(data_dir)), seed=1)


def spec_for(tmp_path, **kw) -> tuners.SearchSpec:
    base = dict(
        algorithm="random",
        objective="val_accuracy",
        direction="max",
        max_trials=2,
        max_epochs=1,
        patience=1,
        seed=3,
        tuner_dir=str(tmp_path / "tuner"),
        track=False,
    )
    return tuners.SearchSpec(**{**base, **kw})


# Each algorithm's KerasTuner tuner and oracle classes.
ALGORITHM_CLASSES = {
    "random": ("RandomSearch", "RandomSearchOracle"),
    "grid": ("GridSearch", "GridSearchOracle"),
    "bayesian": ("BayesianOptimization", "BayesianOptimizationOracle"),
    "hyperband": ("Hyperband", "HyperbandOracle"),
}


@pytest.mark.parametrize("algorithm", ["random", "grid", "bayesian", "hyperband"])
def test_every_algorithm_finds_best_values(tmp_path, feed, algorithm, monkeypatch):
    import keras_tuner as kt

    made = []
    make_tuner = tuners.make_tuner

    def recorded_make_tuner(*args, **kwargs):
        made.append(make_tuner(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tuners, "make_tuner", recorded_make_tuner)
    spec = spec_for(
        tmp_path,
        algorithm=algorithm,
        max_epochs=2,
        search_space={"units": [8, 16], "num_layers": [1, 2]},
    )
    result = tuners.run_search(spec, feed)
    # The tuner that ran the trials is the algorithm's, and so is its oracle.
    (tuner,) = made
    assert sorted(tuner.oracle.trials) == sorted(r["trial_id"] for r in result.rows)
    for name, (tuner_class, oracle_class) in ALGORITHM_CLASSES.items():
        assert isinstance(tuner, getattr(kt, tuner_class)) == (name == algorithm)
        assert isinstance(tuner.oracle, getattr(kt.oracles, oracle_class)) == (name == algorithm)
    assert {"learning_rate", "units", "optimizer", "family"} <= set(result.best)
    assert result.best["units"] in (8, 16)
    assert not any(k.startswith("tuner/") for k in result.best)
    assert all(r["status"] == "COMPLETED" for r in result.rows)
    assert len(result.rows) >= 2 and result.stop_reason == ""


def test_a_search_over_the_same_directory_resumes(tmp_path, feed):
    first = tuners.run_search(spec_for(tmp_path, max_trials=2), feed)
    again = tuners.run_search(spec_for(tmp_path, max_trials=3), feed)
    assert again.kept == 2
    assert [r["trial_id"] for r in again.rows] == ["0", "1", "2"]
    for before in first.rows:
        after = next(r for r in again.rows if r["trial_id"] == before["trial_id"])
        assert after["score"] == before["score"] and after["units"] == before["units"]


def test_equal_scores_pick_the_trial_that_ran_first_whatever_the_reload_order():
    def trial(trial_id, score, status="COMPLETED"):
        return SimpleNamespace(trial_id=trial_id, score=score, status=status)

    # A reloaded oracle lists its trials in no particular order.
    trials = [trial("10", 0.9), trial("2", 0.9), trial("1", 0.8), trial("0", float("nan"))]
    trials.append(trial("3", 0.95, status="FAILED"))
    for direction, expected in (("max", ["2", "10", "1"]), ("min", ["1", "2", "10"])):
        oracle = SimpleNamespace(
            objective=SimpleNamespace(direction=direction),
            trials={t.trial_id: t for t in trials},
        )
        assert [t.trial_id for t in tuners.best_completed(oracle)] == expected


NAN_OR_VALID = """
import keras
from kerasflow.modeling import builders

CALLS = []


def build(hp, meta):
    CALLS.append(1)
    inputs, x = builders.build_inputs(meta)
    x = keras.layers.Dense(4)(x)
    if hp.Choice("poison", [True, False]):
        x = keras.layers.Lambda(lambda t: t * float("nan"))(x)
    if hp.Choice("mode", ["ok", "raise"]) == "raise" or (BROKEN and len(CALLS) > 1):
        raise ValueError("no")
    model = keras.Model(inputs, builders.build_head(meta, x))
    return builders.compile_model(model, meta, "adam", 1e-2)
"""


def user_model(tmp_path, broken: bool) -> str:
    path = tmp_path / ("broken.py" if broken else "mine.py")
    path.write_text(f"BROKEN = {broken}\n" + NAN_OR_VALID)
    return f"{path}:build"


def test_failed_trials_are_recorded_and_the_search_goes_on(tmp_path, feed):
    spec = spec_for(
        tmp_path,
        algorithm="grid",
        max_trials=4,
        build_model=user_model(tmp_path, False),
        max_consecutive_failures=3,
    )
    result = tuners.run_search(spec, feed)
    status = {(r["poison"], r["mode"]): (r["status"], r["error"]) for r in result.rows}
    assert status[(True, "ok")][0] == "FAILED" and "loss became nan" in status[(True, "ok")][1]
    assert status[(True, "raise")] == ("FAILED", "ValueError: no")
    assert status[(False, "ok")][0] == "COMPLETED"
    assert status[(False, "raise")] == ("FAILED", "ValueError: no")
    assert result.best == {"poison": False, "mode": "ok"}


FREEZE_PROBE = """
import gc
import keras
from kerasflow.modeling import builders

FROZEN = []


def build(hp, meta):
    FROZEN.append(gc.get_freeze_count())
    inputs, x = builders.build_inputs(meta)
    x = keras.layers.Dense(hp.Int("units", 2, 64))(x)
    model = keras.Model(inputs, builders.build_head(meta, x))
    return builders.compile_model(model, meta, "adam", 1e-2)
"""


def test_trials_run_with_the_objects_alive_before_them_out_of_the_collectors_reach(tmp_path, feed):
    import gc
    import sys

    path = tmp_path / "probe.py"
    path.write_text(FREEZE_PROBE)
    spec = spec_for(tmp_path, max_trials=2, build_model=f"{path}:build")
    tuners.run_search(spec, feed)
    (probe,) = [m for m in list(sys.modules.values()) if getattr(m, "__file__", "") == str(path)]
    # KerasTuner builds once to learn the space; both trials were then built while the
    # objects alive before the search sat frozen ...
    assert len(probe.FROZEN) == 3 and min(probe.FROZEN[1:]) > 1000
    # ... and the search hands them back to the collector when it ends.
    assert gc.get_freeze_count() == 0


def test_objects_frozen_for_a_search_are_collected_once_it_ends():
    import gc
    import weakref

    class Node:
        pass

    def cycle() -> Node:
        node = Node()
        node.me = node
        return node

    before = cycle()
    seen_before = weakref.ref(before)
    with tuners.long_lived_objects_frozen():
        assert gc.get_freeze_count() > 0
        assert not any(o is before for o in gc.get_objects())
        inside = weakref.ref(cycle())
        gc.collect()
        assert inside() is None  # what the trials make is collected as before
        del before
        gc.collect()
        assert seen_before() is not None  # frozen: not collected while the search runs
    gc.collect()
    assert seen_before() is None and gc.get_freeze_count() == 0


def test_objects_the_process_froze_itself_stay_frozen_after_the_search():
    import gc

    gc.freeze()  # as a step forked by the prefork server does with what it inherited
    try:
        with tuners.long_lived_objects_frozen():
            pass
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_consecutive_failures_stop_the_search_with_one_clear_error(tmp_path, feed):
    spec = spec_for(
        tmp_path, max_trials=10, build_model=user_model(tmp_path, True), max_consecutive_failures=2
    )
    with pytest.raises(UserError, match=r"2 consecutive trials failed.*ValueError: no"):
        tuners.run_search(spec, feed)
    assert len(list((tmp_path / "tuner" / "search").glob("trial_*"))) == 2


def test_a_spent_budget_stops_cleanly_and_keeps_the_best(tmp_path, feed):
    spec = spec_for(tmp_path, max_trials=200, max_epochs=3, deadline=time.time() + 6)
    result = tuners.run_search(spec, feed)
    assert result.stop_reason == "time budget spent"
    done = [r for r in result.rows if r["status"] == "COMPLETED"]
    assert 1 <= len(done) < 200 and result.best


def test_a_budget_already_spent_runs_no_trial(tmp_path, feed):
    with pytest.raises(UserError, match="no trial finished \\(time budget spent\\)"):
        tuners.run_search(spec_for(tmp_path, deadline=time.time() - 1), feed)


def test_deadline_callback_stops_training_mid_fit(feed):
    import keras

    from kerasflow.modeling.hypermodel import DeadlineCallback

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    stop = DeadlineCallback(time.time() - 1)
    history = model.fit(
        np.zeros((64, 1)), np.zeros(64), batch_size=8, epochs=50, verbose=0, callbacks=[stop]
    )
    assert stop.stopped and len(history.history["loss"]) == 1


def test_kfold_scores_trials_by_cross_validation(tmp_path, feed, monkeypatch):
    import keras

    folds, fits = [], []
    make_folds, fit = feed.folds, keras.Model.fit

    def recorded_folds(k, batch_size):
        folds.append(make_folds(k, batch_size))
        return folds[-1]

    def recorded_fit(model, *args, **kwargs):
        history = fit(model, *args, **kwargs)
        fits.append((kwargs.get("validation_data"), history.history["val_accuracy"]))
        return history

    monkeypatch.setattr(feed, "folds", recorded_folds)
    monkeypatch.setattr(keras.Model, "fit", recorded_fit)
    spec = spec_for(tmp_path, kfold=3, max_trials=1)
    result = tuners.run_search(spec, feed)
    assert result.rows[0]["status"] == "COMPLETED"
    # One fit per fold, each validated on that fold's held-out rows...
    (pairs,) = folds
    assert len(pairs) == 3 and len(fits) == 3
    assert all(used is held for (used, _), (_, held) in zip(fits, pairs, strict=True))
    # ...and the trial scored by the folds' mean best, their spread recorded beside it.
    bests = [max(values) for _, values in fits]
    assert result.rows[0]["score"] == pytest.approx(np.mean(bests))
    (trial_file,) = tuners.tuner_project_dir(spec.tuner_dir).glob("trial_*/trial.json")
    metrics = json.loads(trial_file.read_text())["metrics"]["metrics"]
    (spread,) = metrics["val_accuracy_fold_std"]["observations"]
    assert spread["value"] == [pytest.approx(np.std(bests))]


def test_kfold_never_holds_out_an_augmented_copy(tmp_path):
    path = make_tabular_bundle(tmp_path / "aug", rows=40, copies=1)
    arrays = load_training_arrays(str(path), str(path))
    assert arrays.originals == 30 and len(arrays.train_y) == 60
    folds = DataFeed(arrays, seed=0).folds(4, batch_size=100)
    held_rows = []
    for train_ds, held_ds in folds:
        ((_, y_fit),) = train_ds.take(1).as_numpy_iterator()
        ((x_out, _),) = held_ds.take(1).as_numpy_iterator()
        held_rows += [tuple(r) for r in np.hstack([x_out[f"x{i}"] for i in range(3)])]
        assert len(y_fit) + len(x_out["x0"]) < 70  # copies of held rows are not trained on
    assert len(held_rows) == 40 and len(set(held_rows)) == 40  # each real row held out once


def test_folds_are_stratified():
    labels = np.array([0] * 30 + [1] * 10)
    folds = fold_of_groups(labels, 40, 5, seed=0)
    for k in range(5):
        assert (labels[folds == k] == 1).sum() == 2


def test_objective_and_direction():
    meta = {C.META_TASK: "regression"}
    assert tuners.resolve_objective(meta) == ("val_loss", "min")
    assert tuners.resolve_objective(meta, "val_mae") == ("val_mae", "min")
    assert tuners.resolve_objective({C.META_TASK: "classification"}, "val_accuracy", "") == (
        "val_accuracy",
        "max",
    )
    with pytest.raises(UserError, match="objective 'val_auc' is not a metric here"):
        tuners.check_objective({C.META_TASK: "classification"}, "val_auc")


def test_trials_are_nested_mlflow_runs(tmp_path, feed, mlflow_store):
    mlflow.set_tracking_uri(mlflow_store)
    mlflow.set_experiment("tuning-unit")
    with mlflow.start_run() as parent:
        spec = spec_for(tmp_path, track=True, max_epochs=2)
        tuners.run_search(spec, feed)
    client = mlflow.MlflowClient()
    trials = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(trials) == 2
    for run in trials:
        assert run.data.tags[C.TAG_KIND] == C.KIND_TRIAL and run.info.status == "FINISHED"
        assert run.data.tags["status"] == "COMPLETED" and run.data.tags["tuner_id"] == "chief"
        assert {"learning_rate", "units", "optimizer"} <= set(run.data.params)
        assert {"duration_s", "rss_mb", "val_accuracy", "best_val_accuracy"} <= set(
            run.data.metrics
        )
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [m.step for m in history] == list(range(len(history)))


def test_tuner_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from keras_tuner.src import utils as kt_utils

    tuners.write_tuner_files_atomically()
    path = tmp_path / "oracle.json"
    kt_utils.save_json(str(path), {"trials": 1})

    def interrupted(*_args):
        raise OSError("killed while writing")

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(OSError):
        kt_utils.save_json(str(path), {"trials": 2, "padding": "x" * 100_000})
    assert json.loads(path.read_text()) == {"trials": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["oracle.json"]


def test_kfold_on_a_time_ordered_split_is_refused_in_the_step(tmp_path, mlflow_store, capsys):
    from kerasflow.components.hyperparameter_search import core as search_step
    from kerasflow.tracking import runs

    path = make_tabular_bundle(tmp_path / "timed")
    meta = json.loads((path / C.META_FILE).read_text())
    (path / C.META_FILE).write_text(json.dumps({**meta, "split": {"strategy": "time"}}))
    parent = runs.find_or_create_pipeline_run(mlflow_store, "kfold-time", "kfp-1")
    with pytest.raises(SystemExit) as stop:
        search_step.run(
            settings={"kfold": 3, "max_trials": 1, "trials_per_process": 0},
            splits_dir=str(path),
            train_dir=str(path),
            hparams_path=str(tmp_path / "best.json"),
            summary_path=str(tmp_path / "summary.md"),
            tracking_uri=mlflow_store,
            parent_run_id=parent,
        )
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("kerasflow: error in hyperparameter_search: k-fold")
    assert not (tmp_path / "best.json").exists()
