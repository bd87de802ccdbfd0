"""Rerunning a recorded pipeline run: the same settings on the same data, compared metric by
metric with the original.

The run's settings come from what every step recorded on the pipeline's MLflow run
(`settings/<step>.json`). By default the search is not repeated: the final fit trains on the
run's recorded best hyperparameters with the same seed and TensorFlow op determinism on;
`with_search` repeats the search as well. Nothing is deployed unless asked: the reproduction is
evaluated (against the champion too) but not published, so the champion keeps serving.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.runtime.errors import UserError
from kerasflow.settings import STEP_SETTINGS, RunSettings
from kerasflow.tracking import lineage

DEFAULT_TOLERANCE = 0.005


@dataclasses.dataclass
class Original:
    """What a pipeline run recorded that a reproduction needs."""

    run_id: str
    experiment: str
    settings: dict[str, dict]
    best_hyperparameters: dict[str, Any]
    data_digest: str
    test_metrics: dict[str, float]


def read_original(tracking_uri: str, run_id: str) -> Original:
    """The recorded settings, data digest, best hyperparameters and metrics of a pipeline run.

    Raises:
        UserError: no such run, not a pipeline run, or a run that recorded no settings.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run '{run_id}' in the tracking store {tracking_uri}") from None
    tags = run.data.tags
    if tags.get(C.TAG_KIND) != C.KIND_PIPELINE:
        raise UserError(f"MLflow run '{run_id}' is not a kerasflow pipeline run")
    settings = lineage.read_step_settings(tracking_uri, run_id)
    missing = [
        s for s in ("ingest_clean", "normalize_split", "augment", "train") if s not in settings
    ]
    if missing:
        raise UserError(
            f"pipeline run '{run_id}' recorded no settings for {', '.join(missing)} (a run of an "
            "older release, or one that stopped early): it cannot be reproduced"
        )
    experiment = client.get_experiment(run.info.experiment_id)
    return Original(
        run_id=run_id,
        experiment=experiment.name,
        settings=settings,
        best_hyperparameters=json.loads(tags.get(C.TAG_BEST_HPARAMS, "{}")),
        data_digest=tags.get(lineage.TAG_DATA_HASH, ""),
        test_metrics={
            k[len("test_") :]: v for k, v in run.data.metrics.items() if k.startswith("test_")
        },
    )


def rebuild_settings(original: Original) -> dict[str, Any]:
    """Each step's settings as the run recorded them (a step that recorded none, such as deploy
    of a run that was not blessed, takes the shared keys from the others)."""
    shared: dict[str, Any] = {}
    for values in original.settings.values():
        shared.update(values)
    steps = {}
    for step, model in STEP_SETTINGS.items():
        values = original.settings.get(step)
        if values is None:
            values = {k: v for k, v in shared.items() if k in model.model_fields}
        steps[step] = model.parse(values)
    return steps


def reproduction_settings(
    original: Original,
    *,
    tracking_uri: str,
    work_dir: str,
    with_search: bool,
    deploy: bool,
) -> RunSettings:
    """The settings of the rerun.

    Raises:
        UserError: a run that fine-tuned a champion, or one without best hyperparameters.
    """
    steps = rebuild_settings(original)
    train, search, evaluate = steps["train"], steps["hyperparameter_search"], steps["evaluate"]
    if train.warm_start:
        raise UserError(
            f"pipeline run '{original.run_id}' fine-tuned the champion of its day (warm start), "
            "which a rerun cannot fetch again: only runs trained from scratch are reproduced"
        )
    if not with_search:
        if not original.best_hyperparameters:
            raise UserError(
                f"pipeline run '{original.run_id}' recorded no best hyperparameters: rerun "
                "with --with-search"
            )
        search.hyperparameters = original.best_hyperparameters
    train.deterministic = True
    evaluate.publish = deploy
    cfg = RunSettings(
        **steps, tracking_uri=tracking_uri, experiment=original.experiment, work_dir=work_dir
    )
    cfg.check_across_steps()
    return cfg


def check_same_data(original: Original, cfg: RunSettings) -> str:
    """The digest of the data the settings name now, when it is the run's.

    Raises:
        UserError: when the data changed (or the run recorded no digest).
    """
    from kerasflow.components.ingest_clean.core import data_digest

    if not original.data_digest:
        raise UserError(
            f"pipeline run '{original.run_id}' recorded no data digest: cannot check that the "
            "data are the same"
        )
    now = data_digest(cfg.ingest_clean)
    if now != original.data_digest:
        raise UserError(
            f"the data at {cfg.ingest_clean.data} changed since pipeline run "
            f"'{original.run_id}' (digest {now}, recorded {original.data_digest}): a "
            "reproduction reruns on the same data only"
        )
    return now


def compare(
    original: dict[str, float], reproduced: dict[str, float], tolerance: float
) -> list[dict[str, Any]]:
    """One row per test metric: both values, the difference and whether it is within
    `tolerance`."""
    rows = []
    for name in sorted(set(original) | set(reproduced)):
        before, after = original.get(name), reproduced.get(name)
        diff = None if before is None or after is None else after - before
        rows.append(
            {
                "metric": name,
                "original": before,
                "reproduced": after,
                "difference": diff,
                "within_tolerance": diff is not None and abs(diff) <= tolerance,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]], tolerance: float) -> str:
    """The comparison as an aligned table."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    lines = [f"{'metric':<10} {'original':>10} {'reproduced':>11} {'difference':>11}  within"]
    for row in rows:
        diff = "-" if row["difference"] is None else f"{row['difference']:+.4f}"
        lines.append(
            f"{row['metric']:<10} {number(row['original']):>10} {number(row['reproduced']):>11} "
            f"{diff:>11}  {'yes' if row['within_tolerance'] else 'NO'} (+-{tolerance})"
        )
    return "\n".join(lines)


def reproduce(
    original: Original,
    cfg: RunSettings,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    verbose: bool = False,
    with_search: bool = False,
) -> dict[str, Any]:
    """Reruns `original` with `cfg` on the same data and compares the test metrics.

    Raises:
        UserError: the data changed, or a step of the rerun failed.
    """
    from kerasflow.pipelines import local_run

    digest = check_same_data(original, cfg)
    try:
        summary = local_run.run_pipeline(cfg, verbose=verbose)
    except local_run.PipelineInterrupted:
        raise
    except local_run.PipelineFailed as exc:
        raise UserError(str(exc)) from None
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=cfg.resolved_tracking_uri())
    client.set_tag(summary.mlflow_run_id, lineage.TAG_REPRODUCES, original.run_id)
    recorded = client.get_run(summary.mlflow_run_id).data.tags.get(lineage.TAG_DATA_HASH, "")
    rows = compare(original.test_metrics, summary.test_metrics, tolerance)
    return {
        "original_run": original.run_id,
        "reproduction_run": summary.mlflow_run_id,
        "with_search": with_search,
        "data_digest": digest,
        "same_data": recorded == original.data_digest,
        "best_hyperparameters": summary.best_hyperparameters,
        "deployed_version": summary.model_version,
        "tolerance": tolerance,
        "metrics": rows,
        "reproduced": bool(rows) and all(r["within_tolerance"] for r in rows),
        "seconds": summary.seconds,
    }


def reproduction_work_dir(work_dir: str, run_id: str) -> str:
    """A fresh folder for a rerun's pipeline root and logs (a repeated search starts afresh)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return str(Path(work_dir, "reproduce", f"{run_id[:12]}-{stamp}").absolute())
