"""Drift check: does the pipeline's data differ from what the serving champion learned from?

The first step of a `--when drifted` pipeline (kerasflow.pipelines.dag). It finds or creates the
pipeline's MLflow run (as ingest_clean does, which then finds the same run), tests the data
against the champion's drift reference in a step run of its own, tags the pipeline run with the
verdict and returns it; the training steps run under a condition on it. With no champion yet,
or a champion trained before runs recorded drift references, there is nothing to compare with
and the pipeline trains.
"""

from __future__ import annotations

from typing import Any

from kerasflow.monitoring import check, report
from kerasflow.monitoring.reference import NoReference
from kerasflow.runtime import boundary
from kerasflow.runtime.fileio import write_bytes_atomic
from kerasflow.tracking import registry, runs

STEP = "drift_check"


@boundary.step_entry(STEP)
def run(
    *,
    settings: dict[str, Any],
    data: str,
    model_name: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    report_path: str,
) -> bool:
    """Runs the step; returns whether the data drifted (True also when there is no champion).

    Args:
        settings: The drift thresholds (kerasflow.settings.DriftSettings keys).
        data: The data URI the pipeline trains on.
        model_name: The served model whose champion is compared with.
        tracking_uri: MLflow tracking URI ("" for MLFLOW_TRACKING_URI).
        experiment: MLflow experiment of the pipeline run.
        kfp_run_id: The KFP run id the pipeline's MLflow run is found or created from.
        report_path: Output HTML drift report.
    """
    options = check.options_of(settings)
    tracking_uri = runs.resolve_uri(tracking_uri)
    parent = runs.find_or_create_pipeline_run(tracking_uri, experiment, kfp_run_id)
    with runs.step_run(tracking_uri, parent, STEP):
        runs.log_params({"data": data, "model_name": model_name, **settings})
        text = ""
        if registry.get_champion(tracking_uri, model_name) is None:
            text = f"model '{model_name}' has no champion yet: training"
        else:
            try:
                result, facts = check.check_champion(
                    tracking_uri, model_name, data=data, options=options
                )
            except NoReference as exc:
                text = f"{exc}; training, which records one"
        if text:
            write_bytes_atomic(report_path, f"<html><body><p>{text}</p></body></html>".encode())
            runs.set_pipeline_tags(parent, {check.TAG_DRIFTED: "true"})
            boundary.progress(STEP, text)
            return True
        title = f"Drift of {data} from {model_name} v{facts['registry_version']}"
        page = check.log_to_active_run(result, facts, title)
        write_bytes_atomic(report_path, page.encode())
        runs.set_pipeline_tags(parent, {check.TAG_DRIFTED: str(result.drifted).lower()})
        for line in report.table(result).splitlines():
            boundary.progress(STEP, line)
        return result.drifted
