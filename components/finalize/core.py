"""Finalize: end the pipeline's MLflow run with the pipeline's outcome, and tidy orphans.

This is the pipeline's exit handler: KFP runs it after the other tasks whatever their outcome,
so the pipeline's MLflow run never stays RUNNING after the pipeline ended. It works within the
tracking timeout: a tracking server that does not answer leaves the runs to the next
reconciliation (every run, and `kerasflow reconcile`, does one).
"""

from __future__ import annotations

import sys

from kerasflow import constants as C
from kerasflow.runtime import boundary
from kerasflow.runtime.errors import first_line
from kerasflow.tracking import lifecycle, runs

STEP = "finalize"


def mlflow_status(state: str) -> str:
    """The MLflow status of a pipeline that ended in KFP state `state`."""
    if lifecycle.stop_requested() or state.upper() in ("CANCELED", "CANCELLED", "CANCELING"):
        return "KILLED"
    return "FINISHED" if state.upper() == "SUCCEEDED" else "FAILED"


def end_runs(*, state: str, error: str, tracking_uri: str, experiment: str, kfp_run_id: str):
    """Ends the KFP run's pipeline run and its open step runs; reconciles the experiment.

    Returns:
        What was ended, as lifecycle.Ended records.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    found = client.search_runs(
        [exp.experiment_id],
        f"tags.`{C.TAG_KFP_RUN_ID}` = '{kfp_run_id}' and tags.`{C.TAG_KIND}` = '{C.KIND_PIPELINE}'",
        max_results=1,
    )
    ended = []
    if found:
        status = mlflow_status(state)
        if status == "FINISHED":
            reason = "the pipeline succeeded"
        else:
            first = (error or "").strip().splitlines()
            reason = lifecycle.stop_requested() or (first[0] if first else f"pipeline {state}")
        ended = lifecycle.finish_pipeline_run(client, found[0].info.run_id, status, reason)
    return ended + lifecycle.reconcile(client, exp.experiment_id)


def run(*, state: str, error: str, tracking_uri: str, experiment: str, kfp_run_id: str) -> None:
    """Runs the step (bounded by the tracking timeout); a failure is one line and exit code 1."""
    try:
        uri = runs.resolve_uri(tracking_uri)
        ended = lifecycle.bounded(
            end_runs,
            lifecycle.tracking_timeout(),
            state=state,
            error=error,
            tracking_uri=uri,
            experiment=experiment,
            kfp_run_id=kfp_run_id,
        )
    except Exception as exc:  # noqa: BLE001 - one line, the next reconciliation tidies up
        first = first_line(exc)
        print(
            f"kerasflow: error in {STEP}: could not end the pipeline's MLflow runs at "
            f"{tracking_uri or 'MLFLOW_TRACKING_URI'}: {first}; the next run reconciles them",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(1) from None
    for item in ended:
        boundary.progress(STEP, str(item))
