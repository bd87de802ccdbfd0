"""The train step's ensemble: the search's K best distinct trials fitted and combined.

The first member is the model the step already fitted on the best hyperparameters; the others
are fitted the same way (early stopping on validation, the best epoch's weights, a refit on
train+val when asked) on the next best distinct trials. The members are combined into one
Keras model (kerasflow.modeling.ensemble) that the step exports like a single model; the
members' own `.keras` files and `ensemble.json` (each member's trial, validation score and
weight) go beside it, so the evaluate step can report the ensemble against its best member.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.modeling import ensemble as combine
from kerasflow.runtime import boundary
from kerasflow.runtime.fileio import write_json_atomic
from kerasflow.settings import TrainSettings
from kerasflow.tuning import tuners

STEP = "train"


@dataclasses.dataclass
class Member:
    """One fitted member: its model, trial, hyperparameters, history and validation score."""

    model: Any
    trial_id: str
    hparams: dict
    history: dict
    score: float | None
    weight: float | None = None
    """Its averaging weight (None in a stacking ensemble, whose combiner learns them)."""


def read_ranked_trials(trials_dir: str) -> list[dict]:
    """The search's finished trials, best first (empty when the search wrote none)."""
    path = Path(trials_dir, C.RANKED_TRIALS_FILE) if trials_dir else None
    if path is None or not path.is_file():
        return []
    return json.loads(path.read_text())


def validation_score(history: dict, monitor: str) -> float | None:
    """The monitored validation metric at the fit's best epoch (None when not recorded)."""
    values = history.get(monitor) or []
    if not values:
        return None
    epoch = int(history.get("best_epoch", [len(values)])[0])
    return float(values[min(max(epoch, 1), len(values)) - 1])


def fit_member(
    hparams: dict,
    *,
    index: int,
    count: int,
    opts: TrainSettings,
    arrays: Any,
    build_fn: Any,
    log_dir: Path | None = None,
) -> tuple[Any, dict]:
    """Fits one more member on `hparams` as the step fits its model (and refits it on asking).

    With `log_dir`, the fit writes TensorBoard logs under `log_dir/member_<index>`.
    """
    from kerasflow.components.train import core
    from kerasflow.data.feeds import DataFeed, class_weight_arg
    from kerasflow.runtime import progress
    from kerasflow.tracking import tensorboard

    meta = arrays.meta
    seed = opts.seed + index
    batch = int(hparams.get("batch_size", opts.batch_size))
    feed = DataFeed(arrays, seed)
    train_ds, val_ds = feed.datasets(batch)
    monitor = tuners.resolve_objective(meta, opts.objective, opts.direction)[0]
    shown = monitor if monitor.startswith("val_") else f"val_{monitor}"
    boundary.progress(
        STEP, f"ensemble member {index + 1}/{count}: fitting up to {opts.final_epochs} epochs"
    )
    model, history = core.fit_final(
        meta,
        train_ds,
        val_ds,
        hparams,
        epochs=opts.final_epochs,
        patience=opts.patience,
        seed=seed,
        class_weight=class_weight_arg(meta),
        extra_callbacks=[
            progress.epoch_callback(STEP, opts.final_epochs, shown),
            *tensorboard.callbacks(log_dir is not None, Path(log_dir or ".", f"member_{index}")),
        ],
        label_smoothing=opts.label_smoothing,
        objective=opts.objective,
        direction=opts.direction,
        lr_schedule=opts.lr_schedule,
        build_fn=build_fn,
    )
    if opts.refit:
        merged = feed.merged(batch, seed)
        model, extra = core.refit_on_all(
            meta,
            merged,
            hparams,
            epochs=int(history["best_epoch"][0]),
            seed=seed,
            class_weight=class_weight_arg(meta),
            label_smoothing=opts.label_smoothing,
            lr_schedule=opts.lr_schedule,
            build_fn=build_fn,
        )
        history.update(extra)
    return model, history


def fit_ensemble(
    first: Any,
    first_history: dict,
    hparams: dict,
    *,
    opts: TrainSettings,
    arrays: Any,
    trials_dir: str,
    build_fn: Any = None,
    log_dir: Path | None = None,
) -> tuple[Any, dict, list[Member]]:
    """Fits the other members and combines them with `first` (fitted on `hparams`).

    With `log_dir`, each other member's fit writes TensorBoard logs into a folder of its own.

    Returns:
        The combined model (compiled), the history shown for the step (its best member's) and
        the members. With fewer distinct finished trials than asked, the ensemble has as many
        members as there are; with one, `first` is returned alone and no members.
    """
    meta = arrays.meta
    monitor, direction = tuners.resolve_objective(meta, opts.objective, opts.direction)
    if not monitor.startswith("val_"):
        monitor = f"val_{monitor}"
    best = combine.model_values(hparams)
    trials = read_ranked_trials(trials_dir)
    same = [combine.model_values(t["hyperparameters"]) == best for t in trials]
    ranked = [t for t, is_best in zip(trials, same, strict=True) if not is_best]
    first_id = next((str(t["trial_id"]) for t, b in zip(trials, same, strict=True) if b), "best")
    others = combine.distinct_trials(ranked, opts.ensemble - 1)
    count = 1 + len(others)
    if count < opts.ensemble:
        boundary.progress(
            STEP,
            f"ensemble of {count}: the search finished {count} distinct trials "
            f"({opts.ensemble} asked)",
        )
    score = validation_score(first_history, monitor)
    members = [Member(first, first_id, best, first_history, score)]
    if count == 1:
        return first, first_history, []
    for i, trial in enumerate(others, start=1):
        values = combine.model_values(trial["hyperparameters"])
        model, history = fit_member(
            values,
            index=i,
            count=count,
            opts=opts,
            arrays=arrays,
            build_fn=build_fn,
            log_dir=log_dir,
        )
        score = validation_score(history, monitor)
        members.append(Member(model, str(trial["trial_id"]), values, history, score))
    scores = [m.score for m in members]
    weights = combine.member_weights(scores, direction, opts.ensemble_weights)
    if opts.ensemble_method == "average":
        for member, weight in zip(members, weights, strict=True):
            member.weight = weight
    task = meta[C.META_TASK]
    model = combine.build_ensemble(
        [m.model for m in members], task, method=opts.ensemble_method, weights=weights
    )
    combine.compile_ensemble(model, task)
    if opts.ensemble_method == "stacking":
        boundary.progress(STEP, f"fitting the stacking combiner of {count} members")
        combine.fit_stacking(model, arrays.val_x, arrays.val_y, opts.seed)
    top = combine.best_member(scores, direction)
    shown = ", ".join(
        f"{m.trial_id} {monitor} {m.score:.4f}" if m.score is not None else m.trial_id
        for m in members
    )
    boundary.progress(STEP, f"ensemble ({opts.ensemble_method}) of trials {shown}")
    return model, members[top].history, members


def describe_members(members: list[Member], opts: TrainSettings, meta: dict) -> dict:
    """What `ensemble.json` says: the method, the weighting and every member."""
    monitor, direction = tuners.resolve_objective(meta, opts.objective, opts.direction)
    scores = [m.score for m in members]
    return {
        "method": opts.ensemble_method,
        "weighting": opts.ensemble_weights if opts.ensemble_method == "average" else "learned",
        "objective": monitor if monitor.startswith("val_") else f"val_{monitor}",
        "direction": direction,
        "best_member": combine.best_member(scores, direction),
        "members": [
            {
                "trial_id": m.trial_id,
                "hyperparameters": m.hparams,
                "val_score": m.score,
                "weight": m.weight,
                "best_epoch": int(m.history.get("best_epoch", [0])[0]),
                "file": f"{C.ENSEMBLE_MEMBERS_DIR}/member_{i}.keras",
            }
            for i, m in enumerate(members)
        ],
    }


def save_members(members: list[Member], out: Path, opts: TrainSettings, meta: dict) -> dict:
    """Writes every member's `.keras` file and `ensemble.json` into the model folder."""
    info = describe_members(members, opts, meta)
    folder = out / C.ENSEMBLE_MEMBERS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for i, member in enumerate(members):
        member.model.save(folder / f"member_{i}.keras")
    write_json_atomic(out / C.ENSEMBLE_FILE, info)
    return info
