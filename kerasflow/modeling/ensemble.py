"""Ensembles: K fitted models combined into one Keras model with the members' inputs.

The combined model takes the same named raw inputs as every member and answers with one
output of the same shape, so it exports, loads, serves and is gated like a single model.
Two ways to combine:

- `average`: a fixed weighted mean of the members' outputs (class probabilities or values).
  The weights are the members' validation scores normalized to sum to one (for a score that
  is better when lower, such as a loss, their reciprocals), or equal weights.
- `stacking`: a small learned combiner on top of the frozen members. For classification it is
  a softmax over a linear map of every member's log-probabilities, started at their geometric
  mean; for regression a linear map of the members' values, started at their mean. It is
  fitted on one half of the validation split and stopped early on the other half.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

METHODS = ("average", "stacking")
WEIGHTINGS = ("score", "equal")
STACKING_EPOCHS = 200
STACKING_PATIENCE = 10


def distinct_trials(ranked: Sequence[dict], count: int) -> list[dict]:
    """The first `count` trials of `ranked` (best first) whose hyperparameters differ.

    Hyperband trains one configuration at several budgets as separate trials; its
    bookkeeping values (`tuner/...`) are ignored, so such trials count once.
    """
    seen: set[str] = set()
    out: list[dict] = []
    for trial in ranked:
        key = repr(sorted(model_values(trial["hyperparameters"]).items()))
        if key in seen:
            continue
        seen.add(key)
        out.append(trial)
        if len(out) == count:
            break
    return out


def model_values(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values without KerasTuner's bookkeeping (`tuner/epochs`...)."""
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


def member_weights(scores: Sequence[float | None], direction: str, weighting: str) -> list[float]:
    """Averaging weights of members with validation `scores`, summing to one.

    `score` weighting gives each member its share of the scores (of their reciprocals when
    `direction` is `min`); a missing, non-finite or non-positive score makes every weight
    equal, as does `equal` weighting.
    """
    n = len(scores)
    if n == 0:
        raise ValueError("an ensemble needs at least one member")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting '{weighting}' (choose from {', '.join(WEIGHTINGS)})")
    usable = all(s is not None and math.isfinite(s) and s > 0 for s in scores)
    if weighting == "equal" or not usable:
        return [1.0 / n] * n
    values = [float(s) if direction == "max" else 1.0 / float(s) for s in scores]  # type: ignore[arg-type]
    total = sum(values)
    return [v / total for v in values]


def best_member(scores: Sequence[float | None], direction: str) -> int:
    """Index of the member with the best validation score (the first of equals)."""
    sign = 1.0 if direction == "max" else -1.0
    ranked = [
        (sign * float(s), -i) for i, s in enumerate(scores) if s is not None and math.isfinite(s)
    ]
    return -max(ranked)[1] if ranked else 0


def combine_outputs(outputs: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """The weighted mean of member outputs stacked on the first axis (NumPy reference)."""
    w = np.asarray(weights, dtype=np.float64).reshape((-1,) + (1,) * (outputs.ndim - 1))
    return (outputs * w).sum(axis=0)


def build_ensemble(
    members: Sequence[Any], task: str, *, method: str = "average", weights: Sequence[float] = ()
) -> Any:
    """One Keras model over `members` with their inputs and one combined output.

    Args:
        members: Fitted Keras models with the same named inputs and output shape.
        task: `classification` (members answer probabilities) or `regression`.
        method: `average` or `stacking` (whose combiner still has to be fitted).
        weights: The averaging weights (equal when empty); ignored by `stacking`.
    """
    import keras

    from kerasflow.modeling.layers import MemberCombiner

    if method not in METHODS:
        raise ValueError(f"unknown ensemble method '{method}' (choose from {', '.join(METHODS)})")
    first = members[0]
    inputs = {
        t.name: keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype, name=t.name)
        for t in first.inputs
    }
    outputs = []
    for i, member in enumerate(members):
        # Layer names must be unique in the combined model; the members' inner names may repeat.
        member.name = f"member_{i}"
        member.trainable = False
        outputs.append(member(inputs))
    combiner = MemberCombiner(
        count=len(members),
        method=method,
        task=task,
        weights=list(weights) or [1.0 / len(members)] * len(members),
        name="combine",
    )
    return keras.Model(inputs, combiner(outputs), name="ensemble")


def compile_ensemble(model: Any, task: str, learning_rate: float = 0.01) -> Any:
    """Compiles the combined model with the task's loss and metric (what members use)."""
    import keras

    opt = keras.optimizers.Adam(learning_rate=learning_rate)
    if task == "classification":
        model.compile(opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model.compile(opt, loss="mse", metrics=["mae"])
    return model


def fit_stacking(model: Any, x: dict[str, np.ndarray], y: np.ndarray, seed: int) -> dict:
    """Fits the combiner of a `stacking` ensemble on (x, y), the members frozen.

    Half of the rows (seeded) fit the combiner, the other half stop the fit early and its best
    epoch's weights are kept. Returns the fit's history.
    """
    import keras

    from kerasflow.modeling import builders

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    half = max(1, len(y) // 2)
    fit_idx, stop_idx = order[:half], order[half:] if len(y) > 1 else order

    def part(idx: np.ndarray) -> Any:
        return builders.make_dataset({k: v[idx] for k, v in x.items()}, y[idx], 64)

    keras.utils.set_random_seed(seed)
    history = model.fit(
        part(fit_idx),
        validation_data=part(stop_idx),
        epochs=STACKING_EPOCHS,
        verbose=0,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=STACKING_PATIENCE, restore_best_weights=True
            )
        ],
    )
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}
