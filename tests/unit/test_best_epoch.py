"""The final fit's best epoch: the objective first, the validation loss on a tie."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.modeling import best_epoch

pytestmark = pytest.mark.unit


def test_a_tie_on_the_objective_goes_to_the_lower_loss_in_either_direction():
    assert best_epoch.better((0.97, 0.10), (0.97, 0.20), "max")
    assert not best_epoch.better((0.97, 0.30), (0.97, 0.20), "max")
    assert best_epoch.better((0.98, 0.90), (0.97, 0.10), "max")
    assert best_epoch.better((1.5, 0.4), (1.5, 0.5), "min")
    assert not best_epoch.better((1.6, 0.1), (1.5, 0.5), "min")


def test_best_of_a_history_with_a_plateau_of_accuracy():
    history = {
        "val_accuracy": [0.74, 0.97, 0.97, 0.95, 0.97, 0.97],
        "val_loss": [0.64, 0.21, 0.14, 0.12, 0.09, 0.11],
    }
    assert best_epoch.best_of(history, "val_accuracy", "max") == (5, (0.97, 0.09))
    # Without a validation loss, the first epoch of the best objective.
    assert best_epoch.best_of({"val_mae": [3.0, 2.0, 2.0]}, "val_mae", "min") == (2, (2.0, np.inf))
    assert best_epoch.best_of({}, "val_accuracy", "max") == (1, None)


def started(patience: int):
    """A one-layer model and the callback watching it, as at the start of a fit."""
    import keras

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keep = best_epoch.callback("val_accuracy", "max", patience=patience)
    keep.set_model(model)
    model.stop_training = False  # as fit() sets it
    keep.on_train_begin()
    return model, keep


def test_callback_keeps_training_while_the_loss_falls_at_equal_accuracy_and_restores_the_best():
    model, keep = started(patience=2)
    logs = [(0.90, 0.5), (0.97, 0.3), (0.97, 0.2), (0.97, 0.25), (0.96, 0.1)]
    for epoch, (accuracy, loss) in enumerate(logs):
        model.layers[0].kernel.assign(np.full((2, 1), float(epoch), "float32"))
        keep.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
        assert model.stop_training == (epoch == 4)  # two epochs after the best (epoch 3)
    keep.on_train_end()

    assert keep.best_epoch == 3
    np.testing.assert_array_equal(np.asarray(model.layers[0].kernel), np.full((2, 1), 2.0))


def test_callback_ignores_an_epoch_without_the_objective():
    model, keep = started(patience=1)
    keep.on_epoch_end(0, {"val_loss": 0.3})
    keep.on_epoch_end(1, {"val_accuracy": float("nan"), "val_loss": 0.3})
    keep.on_train_end()
    assert keep.best_epoch == 0 and not model.stop_training
