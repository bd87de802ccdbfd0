"""Ensembles: choosing members, their weights, the combined model and the train step's part."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasflow import constants as C
from kerasflow.components.evaluate import members as evaluated
from kerasflow.components.train import ensemble as step
from kerasflow.data.feeds import load_training_arrays
from kerasflow.modeling import builders
from kerasflow.modeling import ensemble as combine
from kerasflow.runtime.errors import UserError
from kerasflow.settings import TrainSettings
from tests.unit.test_tuning import make_tabular_bundle
from tests.unit.test_tuning_train import HPARAMS

pytestmark = pytest.mark.unit


def trial(trial_id: str, score: float, **values) -> dict:
    return {"trial_id": trial_id, "score": score, "hyperparameters": {**HPARAMS, **values}}


def test_distinct_trials_skip_repeats_of_one_configuration_and_stop_at_count():
    ranked = [
        trial("3", 0.9, units=8, **{"tuner/epochs": 3}),
        trial("1", 0.8, units=8, **{"tuner/epochs": 1}),  # the same model at a smaller budget
        trial("2", 0.7, units=16),
        trial("0", 0.6, units=32),
    ]
    assert [t["trial_id"] for t in combine.distinct_trials(ranked, 3)] == ["3", "2", "0"]
    assert [t["trial_id"] for t in combine.distinct_trials(ranked, 2)] == ["3", "2"]
    assert len(combine.distinct_trials(ranked[:2], 3)) == 1


def test_weights_follow_scores_reciprocals_for_losses_and_fall_back_to_equal():
    assert combine.member_weights([0.6, 0.3], "max", "score") == pytest.approx([2 / 3, 1 / 3])
    # A loss: the smaller one weighs more.
    assert combine.member_weights([0.1, 0.3], "min", "score") == pytest.approx([0.75, 0.25])
    assert combine.member_weights([0.6, 0.3], "max", "equal") == pytest.approx([0.5, 0.5])
    assert combine.member_weights([0.6, None], "max", "score") == pytest.approx([0.5, 0.5])
    assert combine.member_weights([0.6, float("nan")], "max", "score") == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError):
        combine.member_weights([], "max", "score")


def test_best_member_by_direction_first_of_equals():
    assert combine.best_member([0.8, 0.9, 0.9], "max") == 1
    assert combine.best_member([0.3, 0.1, 0.2], "min") == 1
    assert combine.best_member([None, 0.5], "max") == 1


@pytest.fixture(scope="module")
def arrays(tmp_path_factory):
    path = make_tabular_bundle(tmp_path_factory.mktemp("ens") / "b", rows=160, seed=3)
    return load_training_arrays(str(path), str(path))


@pytest.fixture(scope="module")
def fitted(arrays):
    """Three small members fitted a few epochs on different units and seeds."""
    import keras

    out = []
    for i, units in enumerate((4, 8, 16)):
        keras.utils.set_random_seed(i)
        model = builders.build_from_values({**HPARAMS, "units": units}, arrays.meta)
        model.fit(builders.make_dataset(arrays.train_x, arrays.train_y, 16), epochs=3, verbose=0)
        out.append(model)
    return out


def member_outputs(models, x) -> np.ndarray:
    return np.stack([np.asarray(m.predict(x, verbose=0)) for m in models])


def test_average_answers_the_weighted_mean_keeps_inputs_and_survives_save_and_export(
    arrays, fitted, tmp_path
):
    import tensorflow as tf

    from kerasflow.modeling.export import export_saved_model

    x = {k: v[:20] for k, v in arrays.val_x.items()}
    expected = combine.combine_outputs(member_outputs(fitted, x), [0.5, 0.3, 0.2])
    model = combine.build_ensemble(fitted, "classification", weights=[0.5, 0.3, 0.2])
    combine.compile_ensemble(model, "classification")
    assert sorted(t.name for t in model.inputs) == sorted(t.name for t in fitted[0].inputs)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)
    model.save(tmp_path / C.KERAS_MODEL_FILE)
    loaded = builders.load_model(tmp_path / C.KERAS_MODEL_FILE)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    export_saved_model(model, tmp_path / "sm", arrays.meta)
    fn = tf.saved_model.load(str(tmp_path / "sm")).signatures[C.SERVING_SIGNATURE]
    answer = fn(**{k: tf.constant(v) for k, v in x.items()})[C.SERVING_OUTPUT].numpy()
    np.testing.assert_allclose(answer, expected, atol=1e-6)


def test_stacking_starts_at_the_geometric_mean_and_its_fit_moves_only_the_combiner(arrays, fitted):
    x = {k: v[:20] for k, v in arrays.val_x.items()}
    probs = member_outputs(fitted, x)
    logits = np.log(np.clip(probs, 1e-7, 1)).mean(axis=0)
    geometric = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    model = combine.build_ensemble(fitted, "classification", method="stacking")
    combine.compile_ensemble(model, "classification")
    np.testing.assert_allclose(model.predict(x, verbose=0), geometric, atol=1e-5)
    frozen = [w.copy() for w in fitted[0].get_weights()]
    before = model.get_layer("combine").get_weights()[0].copy()
    history = combine.fit_stacking(model, arrays.val_x, arrays.val_y, seed=0)
    assert history["loss"] and history["val_loss"]
    assert not np.allclose(model.get_layer("combine").get_weights()[0], before)
    for a, b in zip(fitted[0].get_weights(), frozen, strict=True):
        np.testing.assert_array_equal(a, b)
    answer = model.predict(x, verbose=0)
    np.testing.assert_allclose(answer.sum(axis=1), 1.0, atol=1e-5)


def test_regression_average_and_stacking_answer_one_value_per_row():
    import keras

    inputs = {"a": keras.Input(shape=(1,), name="a")}

    def scale(k: float):
        dense = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(k))
        return keras.Model(inputs, dense(inputs["a"]))

    models = [scale(1.0), scale(3.0)]
    x = {"a": np.array([[1.0], [2.0]], dtype="float32")}
    average = combine.build_ensemble(models, "regression", weights=[0.25, 0.75])
    np.testing.assert_allclose(average.predict(x, verbose=0), [[2.5], [5.0]], atol=1e-5)
    stacked = combine.build_ensemble(models, "regression", method="stacking")
    np.testing.assert_allclose(stacked.predict(x, verbose=0), [[2.0], [4.0]], atol=1e-5)


def write_ranked(tmp_path, trials) -> str:
    (tmp_path / C.RANKED_TRIALS_FILE).write_text(json.dumps(trials))
    return str(tmp_path)


def test_the_step_fits_the_next_distinct_trials_and_describes_every_member(
    arrays, fitted, tmp_path
):
    ranked = [
        trial("4", 0.95),  # the best: the model the step already fitted
        trial("2", 0.94, **{"tuner/epochs": 2}),  # the best again at another budget
        trial("1", 0.9, units=16),
        trial("0", 0.8, units=4),
        trial("3", 0.7, units=32),
    ]
    opts = TrainSettings(ensemble=3, final_epochs=2, patience=1)
    history = {"loss": [0.5], "val_loss": [0.4], "val_accuracy": [0.9], "best_epoch": [1.0]}
    trials_dir = write_ranked(tmp_path, ranked)
    model, shown, members = step.fit_ensemble(
        fitted[1], history, HPARAMS, opts=opts, arrays=arrays, trials_dir=trials_dir,
        log_dir=tmp_path / "tb",
    )  # fmt: skip
    assert [m.trial_id for m in members] == ["4", "1", "0"]
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == ["member_1", "member_2"]
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert [m.hparams["units"] for m in members] == [8, 16, 4]
    assert all(m.score is not None for m in members)
    assert sum(m.weight for m in members) == pytest.approx(1.0)
    assert len(model.outputs) == 1 and model.outputs[0].shape[-1] == 2
    info = step.save_members(members, tmp_path / "model", opts, arrays.meta)
    assert info["method"] == "average" and info["objective"] == "val_accuracy"
    assert shown is members[info["best_member"]].history
    for m in info["members"]:
        assert (tmp_path / "model" / m["file"]).is_file()
    # The evaluate step scores every member on the same rows.
    scores = evaluated.score_members(
        info, tmp_path / "model", arrays.meta, _part(arrays), lambda meta, y, out: {"n": len(out)}
    )
    assert scores == [{"n": len(arrays.val_y)}] * 3


def _part(arrays):
    from kerasflow.data import artifacts

    frame = {k: v.reshape(-1) for k, v in arrays.val_x.items()}
    import pandas as pd

    return artifacts.Part(frame=pd.DataFrame({**frame, "y": arrays.val_y}))


def test_one_distinct_trial_leaves_the_single_model(arrays, fitted, tmp_path):
    opts = TrainSettings(ensemble=3, final_epochs=1)
    history = {"loss": [0.5], "val_accuracy": [0.9], "best_epoch": [1.0]}
    trials_dir = write_ranked(tmp_path, [trial("0", 0.9), trial("1", 0.9, **{"tuner/epochs": 3})])
    model, shown, members = step.fit_ensemble(
        fitted[0], history, HPARAMS, opts=opts, arrays=arrays, trials_dir=trials_dir
    )
    assert model is fitted[0] and shown is history and members == []


def test_comparison_and_report_name_the_best_member_by_validation_score():
    info = {
        "method": "average",
        "weighting": "score",
        "objective": "val_accuracy",
        "best_member": 1,
        "members": [
            {"trial_id": "3", "val_score": 0.90, "weight": 0.49},
            {"trial_id": "7", "val_score": 0.95, "weight": 0.51},
        ],
    }
    meta = {C.META_TASK: "classification"}
    summary = evaluated.comparison(
        info, [{"accuracy": 0.97}, {"accuracy": 0.93}], {"accuracy": 0.96}, meta
    )
    assert summary["best_member_trial"] == "7"
    assert (summary["ensemble_test"], summary["best_member_test"]) == (0.96, 0.93)
    text = evaluated.render(summary)
    assert "ensemble 0.9600, best member by val_accuracy (trial 7) 0.9300" in text
    assert "| 1 (best) | 7 | 0.9500 | 0.510 | 0.9300 |" in text
    tracked = evaluated.tracked_metrics(summary)
    assert (
        tracked["best_member_test_accuracy"] == 0.93 and tracked["member_0_test_accuracy"] == 0.97
    )


def test_validation_score_is_the_monitored_value_at_the_best_epoch():
    history = {"val_accuracy": [0.5, 0.9, 0.7], "best_epoch": [2.0]}
    assert step.validation_score(history, "val_accuracy") == 0.9
    assert step.validation_score(history, "val_auc") is None
    assert step.read_ranked_trials("") == []


def test_settings_refuse_an_ensemble_with_warm_start_and_exports_they_cannot_make(
    monkeypatch, tmp_path
):
    monkeypatch.setenv("KERASFLOW_TFJS_CONVERTER", str(tmp_path / "tensorflowjs_converter"))
    assert TrainSettings(ensemble=3).ensemble == 3
    with pytest.raises(UserError, match="'ensemble' cannot be combined with 'warm_start'"):
        TrainSettings.parse({"ensemble": 2, "warm_start": True})
    with pytest.raises(UserError, match="export 'tfjs' is not available"):
        TrainSettings.parse({"export": "tflite,tfjs"})
    with pytest.raises(UserError, match="unknown export 'onnx'"):
        TrainSettings.parse({"export": "onnx"})
    with pytest.raises(UserError):
        TrainSettings.parse({"ensemble_method": "vote"})
