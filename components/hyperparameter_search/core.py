"""Hyperparameter search: KerasTuner over the run's search space, resumable and tracked.

The space is the modality's default with the config's `search_space` overrides, or the user's
own `build_model(hp)`. The tuner directory lives under the pipeline root, named by a key of the
data and the search settings, so running the same pipeline again after a crash (or a kill)
keeps every finished trial and runs only what is left. Writes the best hyperparameters as JSON,
a Markdown summary, and logs a table of every trial and a plot of the objective against each
searched hyperparameter. Each trial is a nested MLflow run under this step's run.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from kerasflow import budget, fileio, stepio, tracking, tuning
from kerasflow import constants as C
from kerasflow.errors import UserError
from kerasflow.fileio import write_json_atomic

STEP = "hyperparameter_search"
TUNING_DIR = "tuning"


def search_key(content_hash: str, settings: dict[str, Any]) -> str:
    """A short name for a search: the data's content hash and the settings that shape trials.

    Budgets (time, trial count, workers) are left out on purpose: a rerun with a larger budget
    continues the same search.
    """
    text = json.dumps({"data": content_hash, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tuning_root(pipeline_root: str) -> str:
    """Where searches live under a pipeline root (gs:// roots through KFP's /gcs mount)."""
    if fileio.is_gcs(pipeline_root):
        bucket, key = fileio.split_gcs(pipeline_root)
        return str(Path("/gcs", bucket, key, TUNING_DIR))
    return str(Path(pipeline_root, TUNING_DIR))


def rendezvous_path(pipeline_root: str, run_id: str) -> str:
    """The file through which worker pods of run `run_id` find the chief."""
    return fileio.join(pipeline_root, TUNING_DIR, "rendezvous", f"{run_id}.json")


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
    """Searches the default space over ready-made pipelines; returns best values and trials."""
    from kerasflow.trainingdata import FixedFeed

    objective, direction = tuning.resolve_objective(meta)
    spec = tuning.SearchSpec(
        algorithm=algorithm,
        objective=objective,
        direction=direction,
        max_trials=max_trials,
        max_epochs=max_epochs,
        patience=patience,
        seed=seed,
        tuner_dir=tuner_dir,
        track=track,
    )
    result = tuning.run_search(spec, FixedFeed(meta, train_ds, val_ds))
    return result.best, result.rows


def render_summary(
    result: tuning.SearchOutcome, objective: str, direction: str, searched: list[str]
) -> str:
    """Markdown: the best hyperparameters and every trial, best first."""
    rows = result.rows
    done = [r for r in rows if r["score"] is not None]
    failed = [r for r in rows if r["status"] != "COMPLETED"]
    lines = [
        f"# Hyperparameter search ({len(rows)} trials, objective `{objective}` ({direction}))",
        "",
    ]
    if result.stop_reason:
        lines += [f"Stopped early: {result.stop_reason}; the best trial so far is kept.", ""]
    if result.kept:
        lines += [f"Resumed: {result.kept} finished trials kept from an earlier attempt.", ""]
    lines += [
        "## Best hyperparameters",
        "",
        "```json",
        json.dumps(result.best, indent=2),
        "```",
        "",
        "## Trials",
        "",
    ]
    columns = ["trial_id", "status", "score", *searched]
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    ranked = sorted(done, key=lambda r: r["score"], reverse=direction == "max") + failed
    for r in ranked:
        cells = [_cell(r.get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [f"- {r['trial_id']}: {r['error'] or r['status']}" for r in failed]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/")


def plot_trials(rows: list[dict], objective: str, searched: list[str]):
    """The objective by trial, then against each searched hyperparameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["score"] is not None]
    names = [n for n in searched if any(n in r for r in done)]
    panels = 1 + len(names)
    cols = min(3, panels)
    rows_n = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.2 * cols, 3.2 * rows_n), squeeze=False)
    flat = list(axes.flat)
    ax = flat[0]
    ax.plot(range(len(done)), [r["score"] for r in done], "o-")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("by trial")
    for ax, name in zip(flat[1:], names, strict=False):
        pts = [(r[name], r["score"]) for r in done if r.get(name) is not None]
        xs = [p[0] for p in pts]
        if xs and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, [p[1] for p in pts])
            if min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
        else:
            labels = sorted({str(x) for x in xs})
            ax.scatter([labels.index(str(x)) for x in xs], [p[1] for p in pts])
            ax.set_xticks(range(len(labels)), labels)
        ax.set_xlabel(name)
        ax.set_ylabel(objective)
    for ax in flat[panels:]:
        ax.set_visible(False)
    fig.suptitle(f"{objective} against hyperparameters")
    fig.tight_layout()
    return fig


def resolve_tuner_dir(tuner_dir: str, pipeline_root: str, key: str, fallback: str) -> str:
    """The explicit tuner directory, else `<pipeline root>/tuning/<key>`, else `fallback`."""
    if tuner_dir:
        return tuner_dir
    if pipeline_root:
        return str(Path(tuning_root(pipeline_root), key))
    return fallback


@stepio.step_entry(STEP)
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
    *,
    search_space: dict | None = None,
    build_model: str = "",
    objective: str = "",
    direction: str = "",
    time_budget: str = "",
    max_consecutive_failures: int = 3,
    kfold: int = 0,
    tuner_workers: int = 1,
    worker_pods: int = 0,
    pipeline_root: str = "",
    run_id: str = "",
    trials_per_process: int = 5,
) -> None:
    """Runs the step: search (resuming a killed attempt), write and log its results.

    Trials run in worker processes forked from a server that imports TensorFlow once, a fresh
    one every `trials_per_process` trials (0: every trial in this process, no workers).
    """
    started = time.time()
    workers, pods, quota = int(tuner_workers), int(worker_pods), int(trials_per_process)
    isolated = quota > 0 or workers > 1 or pods > 0
    if isolated:
        from kerasflow.tuning_parallel import warm_forkserver

        warm_forkserver()  # its TensorFlow import overlaps with this process's
    deadline = budget.deadline_after(budget.parse_time_budget(time_budget), started)
    with tracking.step_run(tracking_uri, parent_run_id, STEP) as step:
        from kerasflow import search_space as spaces
        from kerasflow.hypermodel import check_user_build
        from kerasflow.trainingdata import DataFeed, content_hash, load_training_arrays

        arrays = load_training_arrays(splits_dir, train_dir)
        meta = arrays.meta
        # Folds made by normalize_split (its `folds` option) turn on the cross-validated score.
        kfold = int(kfold) or int((meta.get("folds") or {}).get("k", 0))
        objective, direction = tuning.resolve_objective(meta, objective, direction)
        overrides = dict(search_space or {})
        if build_model:
            check_user_build(spaces.load_build_function(build_model), meta)
            searched: list[str] = []
        else:
            tuning.check_objective(meta, objective)
            space = spaces.resolve_space(meta[C.META_MODALITY], overrides)
            searched = spaces.searched_names(space)
        shape = {
            "algorithm": algorithm,
            "objective": objective,
            "direction": direction,
            "max_epochs": int(max_epochs),
            "batch_size": int(batch_size),
            "patience": int(patience),
            "seed": int(seed),
            "search_space": overrides,
            "build_model": build_model,
            "kfold": int(kfold),
        }
        key = search_key(content_hash(arrays), shape)
        fallback = str(Path(summary_path).parent / "tuner")
        directory = resolve_tuner_dir(tuner_dir, pipeline_root, key, fallback)
        spec = tuning.SearchSpec(
            algorithm=algorithm,
            objective=objective,
            direction=direction,
            max_trials=int(max_trials),
            max_epochs=int(max_epochs),
            batch_size=int(batch_size),
            patience=int(patience),
            seed=int(seed),
            tuner_dir=directory,
            search_space=overrides,
            build_model=build_model,
            kfold=int(kfold),
            deadline=deadline,
            max_consecutive_failures=int(max_consecutive_failures),
            splits_dir=splits_dir,
            train_dir=train_dir,
            tracking_uri=tracking.resolve_uri(tracking_uri),
            parent_run_id=step.info.run_id,
            track=tracking.trial_tracking_enabled(),
        )
        params = {
            **{k: v for k, v in shape.items() if k != "algorithm"},
            "tuner": algorithm,
            "max_trials": int(max_trials),
            "time_budget": time_budget or "none",
            "max_consecutive_failures": int(max_consecutive_failures),
            "tuner_workers": workers,
            "worker_pods": pods,
            "trials_per_process": quota,
            "tuner_dir": directory,
        }
        tracking.log_params(params, parent_run_id=parent_run_id)
        stepio.progress(STEP, f"{algorithm} search on {objective} ({direction}) in {directory}")
        if not isolated:
            result = tuning.run_search(spec, DataFeed(arrays, int(seed)))
        else:
            from kerasflow.tuning_parallel import run_parallel_search

            local = 0 if pods and workers <= 1 else max(1, workers)
            result = run_parallel_search(
                spec,
                meta,
                local,
                pods,
                rendezvous_path(pipeline_root, run_id) if pods else "",
                trials_per_process=quota,
            )
        if result.stop_reason:
            stepio.progress(STEP, f"stopped early: {result.stop_reason}; keeping the best so far")
        log_results(
            result,
            objective,
            direction,
            searched,
            hparams_path,
            summary_path,
            parent_run_id,
            time.time() - started,
        )


def log_results(
    result: tuning.SearchOutcome,
    objective: str,
    direction: str,
    searched: list[str],
    hparams_path: str,
    summary_path: str,
    parent_run_id: str,
    seconds: float,
) -> None:
    """Writes the step's outputs and logs the table, the plot and the metrics to MLflow."""
    import mlflow
    import pandas as pd

    if not searched:
        # A user's build_model declares its own space: show what varied between trials.
        names = [k for k in result.best if not k.startswith("tuner/")]
        searched = [n for n in names if len({repr(r.get(n)) for r in result.rows}) > 1]
    write_json_atomic(Path(hparams_path), result.best)
    summary = render_summary(result, objective, direction, searched)
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(summary)
    tracking.log_dict_artifact(result.best, C.HPARAMS_FILE)
    tracking.set_pipeline_tags(parent_run_id, {C.TAG_BEST_HPARAMS: result.best})
    tracking.log_text_artifact(summary, "search_summary.md")
    tracking.log_text_artifact(pd.DataFrame(result.rows).to_csv(index=False), C.TRIALS_FILE)
    tracking.log_figure(
        plot_trials(result.rows, objective, searched), "objective_vs_hyperparameters.png"
    )
    scores = [r["score"] for r in result.rows if r["score"] is not None]
    best = max(scores) if direction == "max" else min(scores)
    failed = sum(1 for r in result.rows if r["status"] != "COMPLETED")
    mlflow.log_metrics(
        {
            "trials": len(result.rows),
            "completed_trials": len(scores),
            "failed_trials": failed,
            "kept_trials": result.kept,
            f"best_{objective}": best,
            "search_seconds": seconds,
        }
    )
    if result.stop_reason:
        mlflow.set_tag("stop_reason", result.stop_reason)
    if result.tuners:
        mlflow.set_tag("tuners", ",".join(result.tuners))
    stepio.progress(STEP, f"best {objective} {best:.4f} with {result.best}")


@stepio.step_entry(STEP + "_worker", heavy_imports=("tensorflow", "keras", "keras_tuner"))
def run_pod_worker(
    splits_dir: str, train_dir: str, pipeline_root: str, run_id: str, worker_index: int | str
) -> None:
    """Runs one worker pod of a search fanned out on a cluster."""
    from kerasflow.tuning_parallel import run_pod_worker as join

    if not pipeline_root:
        raise UserError("worker pods need the pipeline root to find the chief")
    join(rendezvous_path(pipeline_root, run_id), splits_dir, train_dir, int(worker_index))
