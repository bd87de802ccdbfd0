"""The KerasTuner HyperModel of a search: builds a trial's model and fits it.

`build` uses the config-declared space (kerasflow.modeling.search_space) with kerasflow's model
bodies, or the user's own `build_model(hp)`. `fit` picks the trial's batch size and epochs, stops at
the search's deadline, fails the trial on a non-finite loss and, on request, scores the trial
by k-fold cross-validation.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable
from typing import Any

import keras
import keras_tuner as kt
import numpy as np

from kerasflow.modeling import builders
from kerasflow.runtime.errors import UserError


class DeadlineCallback(keras.callbacks.Callback):
    """Stops training once the search's wall-clock deadline (epoch seconds) has passed."""

    def __init__(self, deadline: float) -> None:
        super().__init__()
        self.deadline = deadline
        self.stopped = False

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.deadline and time.time() >= self.deadline:
            self.model.stop_training = True
            self.stopped = True


def call_user_build(fn: Callable[..., Any], hp: Any, meta: dict) -> Any:
    """Calls a user's `build_model(hp)` or `build_model(hp, meta)`; compiles it when needed."""
    try:
        takes_meta = len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        takes_meta = False
    model = fn(hp, meta) if takes_meta else fn(hp)
    if not isinstance(model, keras.Model):
        raise kt.errors.FatalTypeError(
            f"build_model returned {type(model).__name__}, not a keras.Model"
        )
    if not getattr(model, "compiled", False):
        builders.compile_model(model, meta, "adam", 1e-3)
    return model


def best_of(values: list[float], direction: str) -> float:
    """The best finite value of a metric history (NaN when none is finite)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return float("nan")
    return max(finite) if direction == "max" else min(finite)


class TrialModel(kt.HyperModel):
    """Builds and fits one trial's model over a data feed (kerasflow.data.feeds)."""

    def __init__(
        self,
        feed: Any,
        *,
        space: dict | None,
        objective: str,
        direction: str,
        batch_size: int,
        build_fn: Callable[..., Any] | None = None,
        kfold: int = 0,
        deadline: float = 0.0,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.feed = feed
        # The feed's metadata, or those with how to build the model added (a transfer's base).
        self.meta = meta if meta is not None else feed.meta
        self.space = space
        self.objective = objective
        self.direction = direction
        self.batch_size = int(batch_size)
        self.build_fn = build_fn
        self.kfold = int(kfold)
        self.deadline = deadline

    def build(self, hp: Any) -> Any:
        """The trial's compiled model."""
        if self.build_fn is not None:
            return call_user_build(self.build_fn, hp, self.meta)
        return builders.build_model(hp, self.meta, self.space)

    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        """Fits on the feed's data (positional data arguments are ignored)."""
        values = hp.values
        batch_size = int(values.get("batch_size", self.batch_size))
        if "epochs" in values and "tuner/epochs" not in values:
            kwargs["epochs"] = int(values["epochs"])
        kwargs["callbacks"] = [
            *(kwargs.get("callbacks") or []),
            keras.callbacks.TerminateOnNaN(),
            DeadlineCallback(self.deadline),
        ]
        for name in ("x", "y", "validation_data", "batch_size"):
            kwargs.pop(name, None)
        if self.kfold >= 2:
            return self._fit_folds(hp, model, batch_size, kwargs)
        train_ds, val_ds = self.feed.datasets(batch_size)
        history = model.fit(train_ds, validation_data=val_ds, **kwargs)
        _check_finite(history.history)
        return history

    def _fit_folds(self, hp: Any, model: Any, batch_size: int, kwargs: dict) -> dict:
        # Each fold trains a fresh model from scratch for the trial's epoch budget.
        kwargs.pop("initial_epoch", None)
        scores, others = [], {}
        for i, (train_ds, held_ds) in enumerate(self.feed.folds(self.kfold, batch_size)):
            fold_model = model if i == 0 else self.build(hp)
            history = fold_model.fit(train_ds, validation_data=held_ds, **kwargs).history
            _check_finite(history)
            if self.objective not in history:
                raise kt.errors.FatalValueError(
                    f"objective '{self.objective}' is not among the metrics {sorted(history)}"
                )
            scores.append(best_of(history[self.objective], self.direction))
            for name, vals in history.items():
                if name != self.objective:
                    others.setdefault(name, []).append(float(vals[-1]))
        result = {name: float(np.mean(vals)) for name, vals in others.items()}
        result[self.objective] = float(np.mean(scores))
        result[f"{self.objective}_fold_std"] = float(np.std(scores))
        return result


def _check_finite(history: dict) -> None:
    """Fails the trial (the search goes on) when the loss became NaN or infinite."""
    losses = history.get("loss", [])
    for epoch, value in enumerate(losses):
        if not math.isfinite(float(value)):
            raise kt.errors.FailedTrialError(f"loss became {value} in epoch {epoch + 1}")


def check_user_build(fn: Callable[..., Any], meta: dict) -> None:
    """Builds the user's model once with default hyperparameters to fail early and clearly.

    Raises:
        UserError: when the function raises or does not return a keras.Model.
    """
    try:
        call_user_build(fn, kt.HyperParameters(), meta)
    except kt.errors.FatalError as exc:
        raise UserError(f"build_model: {exc}") from None
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"build_model failed: {type(exc).__name__}: {first}") from None
    finally:
        keras.backend.clear_session()
