"""MLflow tracking helpers: the pipeline run, a nested run per step and per tuning trial.

The pipeline's MLflow run is found or created from the KFP run id, so a run started by a
schedule on a cluster (no CLI around) is tracked the same way as one started by `kerasflow run`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.runtime.boundary import add_tracking_time, timed_tracking
from kerasflow.tracking import lifecycle, lineage

_MAX_PARAM_LEN = 6000


def _mlflow():
    import mlflow

    return mlflow


# MLflow 3's UI picks an experiment's view from this tag; without it an experiment whose runs
# log no traces may open in the GenAI view.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


@timed_tracking
def configure(tracking_uri: str, experiment: str = C.DEFAULT_EXPERIMENT) -> str:
    """Points MLflow at `tracking_uri` and returns the experiment id (created when absent)."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient()
    with lifecycle.store_lock(tracking_uri):
        exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        # Keep artifacts beside the database, not in ./mlruns of whatever folder a step runs in.
        location = Path(tracking_uri[len("sqlite:///") :]).parent.joinpath("mlartifacts").as_uri()
    try:
        return client.create_experiment(
            experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except Exception:
        # Another step may have created it between the lookup and the create.
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            raise
        return exp.experiment_id


@timed_tracking
def find_or_create_pipeline_run(
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    pipeline_name: str = C.PIPELINE_NAME,
    params: dict[str, Any] | None = None,
) -> str:
    """Returns the id of the MLflow run of KFP run `kfp_run_id`, creating it on first call."""
    mlflow = _mlflow()
    exp_id = configure(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [exp_id],
        filter_string=f"tags.`{C.TAG_KFP_RUN_ID}` = '{kfp_run_id}' "
        f"and tags.`{C.TAG_KIND}` = '{C.KIND_PIPELINE}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        exp_id,
        run_name=f"{pipeline_name}-{kfp_run_id[:12]}",
        tags={
            C.TAG_KFP_RUN_ID: kfp_run_id,
            C.TAG_KFP_PIPELINE: pipeline_name,
            C.TAG_KIND: C.KIND_PIPELINE,
            **lifecycle.owner_tags(),
            **lineage.code_version(),
        },
    )
    for key, value in (params or {}).items():
        client.log_param(run.info.run_id, key, _param_value(value))
    return run.info.run_id


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:_MAX_PARAM_LEN]


# The steps that work long enough for CPU and memory charts to say something (MLflow's system
# metrics, sampled every 10 s in a thread of the step).
SYSTEM_METRICS_STEPS = ("hyperparameter_search", "train")


@contextlib.contextmanager
def step_run(
    tracking_uri: str, parent_run_id: str, step: str, settings: Any = None
) -> Iterator[Any]:
    """Runs the body inside an MLflow run nested under the pipeline run.

    The step's validated `settings`, when given, are recorded on the pipeline run as
    `settings/<step>.json` (what `kerasflow reproduce` reruns).

    The run ends KILLED when the step is interrupted, FAILED when the body raises, FINISHED
    otherwise. While the body runs, a heartbeat keeps this run and the pipeline's run alive
    (kerasflow.tracking.lifecycle) and stops the step if the tracking server stops answering.
    """
    started = time.perf_counter()
    mlflow = _mlflow()
    mlflow.set_tracking_uri(resolve_uri(tracking_uri))
    parent = mlflow.MlflowClient().get_run(parent_run_id)
    mlflow.set_experiment(experiment_id=parent.info.experiment_id)
    run = mlflow.start_run(
        run_name=step,
        parent_run_id=parent_run_id,
        nested=True,
        log_system_metrics=step in SYSTEM_METRICS_STEPS,
        tags={
            C.TAG_STEP: step,
            C.TAG_KIND: C.KIND_STEP,
            C.TAG_KFP_RUN_ID: parent.data.tags.get(C.TAG_KFP_RUN_ID, ""),
            **lifecycle.owner_tags(),
        },
    )
    if settings is not None:
        lineage.record_step_settings(mlflow.MlflowClient(), parent_run_id, step, settings)
    add_tracking_time(time.perf_counter() - started)
    status = "FAILED"
    try:
        with lifecycle.Heartbeat(resolve_uri(tracking_uri), [run.info.run_id, parent_run_id], step):
            yield run
        status = "FINISHED"
    except lifecycle.Interrupted:
        status = "KILLED"
        raise
    finally:
        if status != "FINISHED":
            # Trials the step was recording when it stopped end with it.
            with contextlib.suppress(Exception):
                lifecycle.end_nested(
                    mlflow.MlflowClient(), run.info.run_id, status, f"its step ended {status}"
                )
        started = time.perf_counter()
        mlflow.end_run(status)
        add_tracking_time(time.perf_counter() - started)


def resolve_uri(tracking_uri: str) -> str:
    """The tracking URI a step uses: its parameter, else MLFLOW_TRACKING_URI (read at run time).

    On a cluster the URI usually comes from a Secret mounted as MLFLOW_TRACKING_URI.
    """
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if not uri:
        from kerasflow.runtime.errors import UserError

        raise UserError("no MLflow tracking URI: pass tracking_uri or set MLFLOW_TRACKING_URI")
    return uri


@timed_tracking
def log_params(params: dict[str, Any], parent_run_id: str = "") -> None:
    """Logs params to the active run (and to the pipeline run when `parent_run_id` is given).

    Non-strings are JSON-encoded and long values truncated.
    """
    if not params:
        return
    values = {k: _param_value(v) for k, v in params.items()}
    _mlflow().log_params(values)
    if parent_run_id:
        client = _mlflow().MlflowClient()
        for key, value in values.items():
            # A retried step logs the same param again: keep the first value.
            with contextlib.suppress(Exception):
                client.log_param(parent_run_id, key, value)


@timed_tracking
def log_dict_artifact(obj: Any, name: str) -> None:
    """Logs a JSON document as an artifact of the active run."""
    _mlflow().log_dict(obj, name)


@timed_tracking
def log_text_artifact(text: str, name: str) -> None:
    """Logs a text document (Markdown, HTML, CSV) as an artifact of the active run."""
    _mlflow().log_text(text, name)


@timed_tracking
def log_figure(fig: Any, name: str) -> None:
    """Logs a matplotlib figure as a PNG artifact of the active run."""
    _mlflow().log_figure(fig, name)


@timed_tracking
def set_pipeline_tags(parent_run_id: str, tags: dict[str, Any]) -> None:
    """Sets tags on the pipeline run (for facts the summary reads back)."""
    client = _mlflow().MlflowClient()
    for key, value in tags.items():
        client.set_tag(parent_run_id, key, _param_value(value))


@timed_tracking
def log_pipeline_metrics(parent_run_id: str, metrics: dict[str, float]) -> None:
    """Logs metrics on the pipeline run itself (the test metrics, for comparison across runs)."""
    client = _mlflow().MlflowClient()
    for key, value in metrics.items():
        client.log_metric(parent_run_id, key, float(value))


@timed_tracking
def log_dir_artifacts(local_dir: str | Path, artifact_path: str) -> None:
    """Logs every file of a local folder under `artifact_path` of the active run."""
    _mlflow().log_artifacts(str(local_dir), artifact_path)


def temp_artifact_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder for files that are logged and then dropped."""
    return tempfile.TemporaryDirectory(prefix="kerasflow-mlflow-")


def find_step_run(parent_run_id: str, step: str) -> str:
    """The id of the latest finished run of `step` under a pipeline run ("" when none)."""
    client = _mlflow().MlflowClient()
    parent = client.get_run(parent_run_id)
    runs = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}' "
        f"and tags.`{C.TAG_STEP}` = '{step}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""


def active_run_id() -> str:
    """The id of the active MLflow run."""
    return _mlflow().active_run().info.run_id


def trial_tracking_enabled() -> bool:
    """Tuning trials are tracked unless KERASFLOW_TRACK_TRIALS=0 (used by benchmarks)."""
    return os.environ.get("KERASFLOW_TRACK_TRIALS", "1") != "0"
