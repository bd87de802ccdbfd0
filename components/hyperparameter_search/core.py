"""Hyperparameter search: KerasTuner over the run's search space, resumable and tracked.

The space is the modality's default with the config's `search_space` overrides, or the user's
own `build_model(hp)`. The tuner directory lives under the pipeline root, named by a key of the
data and the search settings, so running the same pipeline again after a crash (or a kill)
keeps every finished trial and runs only what is left. Writes the best hyperparameters as JSON,
a Markdown summary, and logs a table of every trial and a plot of the objective against each
searched hyperparameter. Each trial is a nested MLflow run under this step's run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.runtime import boundary, budget, fileio, mirror
from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import write_json_atomic
from kerasflow.settings import SearchSettings
from kerasflow.tracking import runs, tensorboard
from kerasflow.tuning import tuners

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
    """Where searches live under a pipeline root (a local folder or the object store itself).

    Not KFP's `/gcs` mount: on open-source KFP that is a per-pod scratch folder, so a retried
    search and the worker pods would share nothing.
    """
    return fileio.join(pipeline_root, TUNING_DIR)


def rendezvous_path(pipeline_root: str, run_id: str) -> str:
    """The file through which worker pods of run `run_id` find the chief."""
    return fileio.join(pipeline_root, TUNING_DIR, "rendezvous", f"{run_id}.json")


def search(
    meta: dict,
    train_ds: Any,
    val_ds: Any,
    *,
    algorithm: str,
    max_trials: int,
    max_epochs: int,
    patience: int,
    tuner_dir: str,
    seed: int,
    track: bool = True,
) -> tuple[dict, list[dict]]:
    """Searches the default space over ready-made pipelines; returns best values and trials."""
    from kerasflow.data.feeds import FixedFeed

    objective, direction = tuners.resolve_objective(meta)
    spec = tuners.SearchSpec(
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
    result = tuners.run_search(spec, FixedFeed(meta, train_ds, val_ds))
    return result.best, result.rows


def render_summary(
    result: tuners.SearchOutcome, objective: str, direction: str, searched: list[str]
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


def plot_trials(
    rows: list[dict], objective: str, searched: list[str], log_scaled: Sequence[str] = ()
):
    """The objective by trial, then against each searched hyperparameter.

    Hyperparameters sampled on a log scale (`log_scaled`, e.g. the learning rate) get a log
    axis, as do positive values spanning more than 20x. Under Hyperband the by-trial panel
    colours each trial by its epoch budget.
    """
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
    ax.plot(range(len(done)), [r["score"] for r in done], "-", color="0.75", zorder=1)
    budgets = sorted({r["epochs"] for r in done if "epochs" in r and "epochs" not in searched})
    if budgets:  # Hyperband: which budget each trial ran under
        for budget in budgets:
            at = [i for i, r in enumerate(done) if r.get("epochs") == budget]
            ax.scatter(at, [done[i]["score"] for i in at], label=f"{budget} epochs", zorder=2)
        ax.legend(title="budget", fontsize="small")
    else:
        ax.scatter(range(len(done)), [r["score"] for r in done], zorder=2)
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("by trial")
    for ax, name in zip(flat[1:], names, strict=False):
        pts = [(r[name], r["score"]) for r in done if r.get(name) is not None]
        xs = [p[0] for p in pts]
        if xs and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
            ax.scatter(xs, [p[1] for p in pts])
            if min(xs) > 0 and (name in log_scaled or max(xs) / min(xs) > 20):
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
        return fileio.join(tuning_root(pipeline_root), key)
    return fallback


@boundary.step_entry(STEP)
def run(
    *,
    settings: SearchSettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    splits_dir: str,
    train_dir: str,
    hparams_path: str,
    summary_path: str,
    tracking_uri: str,
    parent_run_id: str,
    pipeline_root: str = "",
    run_id: str = "",
    trials_dir: str = "",
) -> None:
    """Runs the step: search (resuming a killed attempt), write and log its results.

    Trials run in worker processes forked from a server that imports TensorFlow once, a fresh
    one every `trials_per_process` trials (0: every trial in this process, no workers).

    Args:
        settings: The step's settings (a mapping is validated into SearchSettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        splits_dir: The splits from normalize_split (validation data).
        train_dir: The augmented train split.
        hparams_path: Output JSON of the best hyperparameters.
        summary_path: Output Markdown summary of the trials.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        pipeline_root: The pipeline root, home of resumable tuner directories.
        run_id: The KFP run id, which names the worker pods' rendezvous.
        trials_dir: Output folder: the finished trials best first (for an ensemble) and,
            with `tensorboard_trials`, every trial's TensorBoard logs.
    """
    started = time.time()
    opts = SearchSettings.from_parameters(settings, headline)
    algorithm, tuner_dir, time_budget = opts.tuner, opts.tuner_dir, opts.time_budget
    build_model, seed = opts.build_model, opts.seed
    workers, pods, quota = opts.tuner_workers, opts.worker_pods, opts.trials_per_process
    isolated = not opts.hyperparameters and (quota > 0 or workers > 1 or pods > 0)
    if isolated:
        from kerasflow.tuning.parallel import warm_forkserver

        warm_forkserver()  # its TensorFlow import overlaps with this process's
    deadline = budget.deadline_after(budget.parse_time_budget(time_budget), started)
    with runs.step_run(tracking_uri, parent_run_id, STEP, settings=opts) as step:
        if opts.hyperparameters:
            use_fixed(opts.hyperparameters, hparams_path, summary_path, parent_run_id)
            return
        from kerasflow.data.feeds import open_feed
        from kerasflow.modeling import search_space as spaces
        from kerasflow.modeling.hypermodel import check_user_build
        from kerasflow.modeling.transfer import attach

        in_memory = bool(opts.kfold or opts.base_model)
        feed = open_feed(splits_dir, train_dir, seed, opts.stream_rows, in_memory=in_memory)
        if feed.streamed:
            boundary.progress(
                STEP, f"reading {feed.rows[0]} train rows a row group at a time (stream_rows)"
            )
        meta, transfer = attach(feed.meta, feed.samples()[0], opts)
        # Folds made by normalize_split (its `folds` option) turn on the cross-validated score.
        kfold = opts.kfold or int((meta.get("folds") or {}).get("k", 0))
        if kfold and (meta.get("split") or {}).get("strategy") == "time":
            raise UserError(
                "k-fold cross-validation ('kfold') cannot score a time-ordered split: its folds "
                "would train on rows newer than those they score"
            )
        objective, direction = tuners.resolve_objective(meta, opts.objective, opts.direction)
        overrides = dict(opts.search_space)
        if build_model:
            check_user_build(spaces.load_build_function(build_model), meta)
            searched: list[str] = []
            log_scaled: list[str] = []
        else:
            tuners.check_objective(meta, objective)
            space = spaces.resolve_space(meta[C.META_MODALITY], overrides, transfer=bool(transfer))
            searched = spaces.searched_names(space)
            log_scaled = spaces.log_sampled_names(space)
        shape = {
            "algorithm": algorithm,
            "objective": objective,
            "direction": direction,
            "max_epochs": opts.max_epochs,
            "batch_size": opts.batch_size,
            "patience": opts.patience,
            "seed": seed,
            "search_space": overrides,
            "build_model": build_model,
            "kfold": kfold,
            **({"transfer": transfer} if transfer else {}),
        }
        key = search_key(feed.content_hash(), shape)
        fallback = str(Path(summary_path).parent / "tuner")
        directory = resolve_tuner_dir(tuner_dir, pipeline_root, key, fallback)
        spec = tuners.SearchSpec(
            algorithm=algorithm,
            objective=objective,
            direction=direction,
            max_trials=opts.max_trials,
            max_epochs=opts.max_epochs,
            batch_size=opts.batch_size,
            patience=opts.patience,
            seed=seed,
            tuner_dir=directory,
            search_space=overrides,
            build_model=build_model,
            kfold=kfold,
            stream_rows=opts.stream_rows if feed.streamed else 0,
            transfer=transfer,
            deadline=deadline,
            max_consecutive_failures=opts.max_consecutive_failures,
            splits_dir=splits_dir,
            train_dir=train_dir,
            tracking_uri=runs.resolve_uri(tracking_uri),
            parent_run_id=step.info.run_id,
            track=runs.trial_tracking_enabled(),
            tensorboard_dir=(
                str(Path(trials_dir, C.TENSORBOARD_DIR))
                if opts.tensorboard_trials and trials_dir
                else ""
            ),
        )
        params = {
            **{k: v for k, v in shape.items() if k != "algorithm"},
            "tuner": algorithm,
            "max_trials": opts.max_trials,
            "time_budget": time_budget or "none",
            "max_consecutive_failures": opts.max_consecutive_failures,
            "tuner_workers": workers,
            "worker_pods": pods,
            "trials_per_process": quota,
            "tuner_dir": directory,
        }
        runs.log_params(params, parent_run_id=parent_run_id)
        boundary.progress(STEP, f"{algorithm} search on {objective} ({direction}) in {directory}")
        # Runs of the same search share its tuner directory: one searches at a time, and the
        # next resumes from the trials the first one finished.
        parent, name = os.path.split(directory.rstrip("/"))
        lock = fileio.exclusive_lock(
            parent or ".",
            f".{name}.lock",
            on_wait=lambda: boundary.progress(
                STEP, f"waiting: another run is searching in {directory}"
            ),
        )
        # KerasTuner cannot write to s3:// (nor gs:// without TF's extra): a search on an
        # object store runs in a local copy restored from it and synced back as trials end.
        with lock, mirror.working_copy(directory) as local_dir:
            spec = dataclasses.replace(spec, tuner_dir=local_dir)
            result = _search(
                spec,
                feed,
                meta=meta,
                isolated=isolated,
                workers=workers,
                pods=pods,
                quota=quota,
                pipeline_root=pipeline_root,
                run_id=run_id,
            )
        if result.stop_reason:
            boundary.progress(STEP, f"stopped early: {result.stop_reason}; keeping the best so far")
        log_results(
            result,
            objective=objective,
            direction=direction,
            searched=searched,
            log_scaled=log_scaled,
            hparams_path=hparams_path,
            summary_path=summary_path,
            parent_run_id=parent_run_id,
            seconds=time.time() - started,
        )
        if trials_dir:
            write_json_atomic(Path(trials_dir, C.RANKED_TRIALS_FILE), result.ranked)
            tensorboard.log_artifacts(Path(trials_dir, C.TENSORBOARD_DIR))


def use_fixed(
    hparams: dict[str, Any], hparams_path: str, summary_path: str, parent_run_id: str
) -> None:
    """Writes and logs fixed hyperparameters as the step's result, without a search."""
    write_json_atomic(Path(hparams_path), hparams)
    summary = "# Hyperparameter search\n\nNo search: the run fixed the hyperparameters.\n\n"
    summary += "\n".join(f"- `{k}`: {v}" for k, v in sorted(hparams.items())) + "\n"
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(summary)
    runs.log_params({"fixed_hyperparameters": hparams}, parent_run_id=parent_run_id)
    runs.log_dict_artifact(hparams, C.HPARAMS_FILE)
    runs.set_pipeline_tags(parent_run_id, {C.TAG_BEST_HPARAMS: hparams})
    boundary.progress(STEP, f"no search: fixed hyperparameters {hparams}")


def _search(
    spec: tuners.SearchSpec,
    feed: Any,
    *,
    meta: dict,
    isolated: bool,
    workers: int,
    pods: int,
    quota: int,
    pipeline_root: str,
    run_id: str,
) -> tuners.SearchOutcome:
    """Runs the search in this process, or in worker processes and pods when `isolated`."""
    if not isolated:
        return tuners.run_search(spec, feed)
    from kerasflow.tuning.parallel import run_parallel_search

    local = 0 if pods and workers <= 1 else max(1, workers)
    return run_parallel_search(
        spec,
        meta,
        local,
        pods,
        rendezvous_path(pipeline_root, run_id) if pods else "",
        trials_per_process=quota,
    )


def log_results(
    result: tuners.SearchOutcome,
    *,
    objective: str,
    direction: str,
    searched: list[str],
    log_scaled: Sequence[str] = (),
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
    runs.log_dict_artifact(result.best, C.HPARAMS_FILE)
    runs.set_pipeline_tags(parent_run_id, {C.TAG_BEST_HPARAMS: result.best})
    runs.log_text_artifact(summary, "search_summary.md")
    runs.log_text_artifact(pd.DataFrame(result.rows).to_csv(index=False), C.TRIALS_FILE)
    runs.log_figure(
        plot_trials(result.rows, objective, searched, log_scaled),
        "objective_vs_hyperparameters.png",
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
    boundary.progress(STEP, f"best {objective} {best:.4f} with {result.best}")


@boundary.step_entry(STEP + "_worker", heavy_imports=("tensorflow", "keras", "keras_tuner"))
def run_pod_worker(
    *, splits_dir: str, train_dir: str, pipeline_root: str, run_id: str, worker_index: int | str
) -> None:
    """Runs one worker pod of a search fanned out on a cluster."""
    from kerasflow.tuning.parallel import run_pod_worker as join

    if not pipeline_root:
        raise UserError("worker pods need the pipeline root to find the chief")
    join(rendezvous_path(pipeline_root, run_id), splits_dir, train_dir, int(worker_index))
