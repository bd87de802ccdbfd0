"""Hyperparameter search: KerasTuner over the default space of the data's modality.

Writes the best hyperparameters as JSON and a table of every trial. Each trial is a nested
MLflow run under this step's run (see kerasflow.tuning).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow import modeling, stepio, tracking, tuning
from kerasflow.fileio import write_json_atomic
from kerasflow.trainingdata import class_weight_arg, load_training_data

STEP = "hyperparameter_search"


def trials_table(tuner: Any) -> list[dict]:
    """One row per trial: id, status, score and hyperparameters."""
    rows = []
    for trial in tuner.oracle.trials.values():
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": str(trial.status),
                "score": trial.score,
                **trial.hyperparameters.values,
            }
        )
    return sorted(rows, key=lambda r: r["trial_id"])


def search(
    meta: dict,
    train_ds: Any,
    val_ds: Any,
    algorithm: str,
    max_trials: int,
    max_epochs: int,
    patience: int,
    tuner_dir: str,
    seed: int,
    track: bool = True,
) -> tuple[dict, list[dict]]:
    """Runs the search; returns the best hyperparameter values and the trials table."""
    import keras
    import keras_tuner  # noqa: F401  (fail early, before building anything)

    keras.utils.set_random_seed(seed)
    objective, direction = modeling.objective(meta)
    tuner = tuning.make_tuner(
        algorithm,
        lambda hp: modeling.build_model(hp, meta),
        objective,
        direction,
        max_trials,
        max_epochs,
        tuner_dir,
        "search",
        seed,
        track=track,
    )
    stop = keras.callbacks.EarlyStopping(
        monitor=objective, mode=direction, patience=patience, restore_best_weights=True
    )
    tuner.search(
        train_ds,
        validation_data=val_ds,
        epochs=max_epochs,
        callbacks=[stop],
        verbose=0,
        class_weight=class_weight_arg(meta),
    )
    best = tuner.get_best_hyperparameters(1)[0].values
    # Hyperband's bookkeeping values (tuner/epochs, tuner/bracket...) are not model settings.
    best = {k: v for k, v in best.items() if not k.startswith("tuner/")}
    return best, trials_table(tuner)


def render_summary(best: dict, rows: list[dict], objective: str) -> str:
    """Markdown: the best hyperparameters and the trials ranked by score."""
    done = [r for r in rows if r["score"] is not None]
    lines = [
        f"# Hyperparameter search ({len(rows)} trials, objective `{objective}`)",
        "",
        "## Best hyperparameters",
        "",
        "```json",
        json.dumps(best, indent=2),
        "```",
        "",
        "## Trials",
        "",
        "| trial | status | score |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {r['trial_id']} | {r['status']} | {r['score']:.4f} |"
        for r in sorted(done, key=lambda r: r["score"], reverse=True)
    ]
    return "\n".join(lines) + "\n"


def plot_trials(rows: list[dict], objective: str):
    """A figure of each trial's score in trial order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    done = [(i, r["score"]) for i, r in enumerate(rows) if r["score"] is not None]
    if done:
        ax.plot([d[0] for d in done], [d[1] for d in done], "o-")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("Search progress")
    fig.tight_layout()
    return fig


@stepio.step_entry(STEP, heavy_imports=("tensorflow", "keras", "keras_tuner"))
def run(
    splits_dir: str,
    train_dir: str,
    algorithm: str,
    max_trials: int,
    max_epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    tuner_dir: str,
    hparams_path: str,
    summary_path: str,
    tracking_uri: str,
    parent_run_id: str,
) -> None:
    """Runs the step: search, then write best hyperparameters and the trials summary."""
    with tracking.step_run(tracking_uri, parent_run_id, STEP):
        meta, train_ds, val_ds = load_training_data(
            splits_dir, train_dir, int(batch_size), int(seed)
        )
        params = {
            "tuner": algorithm,
            "max_trials": int(max_trials),
            "max_epochs": int(max_epochs),
            "batch_size": int(batch_size),
            "patience": int(patience),
            "seed": int(seed),
        }
        tracking.log_params(params, parent_run_id=parent_run_id)
        stepio.progress(STEP, f"{algorithm} search, {params}")
        best, rows = search(
            meta,
            train_ds,
            val_ds,
            algorithm,
            int(max_trials),
            int(max_epochs),
            int(patience),
            tuner_dir,
            int(seed),
            track=tracking.trial_tracking_enabled(),
        )
        objective, _ = modeling.objective(meta)
        write_json_atomic(Path(hparams_path), best)
        summary = render_summary(best, rows, objective)
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(summary)
        tracking.log_dict_artifact(best, C.HPARAMS_FILE)
        tracking.set_pipeline_tags(parent_run_id, {C.TAG_BEST_HPARAMS: best})
        tracking.log_text_artifact(summary, "search_summary.md")
        import pandas as pd

        tracking.log_text_artifact(pd.DataFrame(rows).to_csv(index=False), C.TRIALS_FILE)
        tracking.log_figure(plot_trials(rows, objective), "search_progress.png")
        scores = [r["score"] for r in rows if r["score"] is not None]
        import mlflow

        mlflow.log_metrics(
            {
                "trials": len(rows),
                f"best_{objective}": max(scores)
                if modeling.objective(meta)[1] == "max"
                else min(scores),
            }
        )
        stepio.progress(STEP, f"best hyperparameters {best}")
