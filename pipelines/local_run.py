"""Running the training pipeline on this machine under kfp.local, and reading back its results."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.pipelines.console import _ANSI, quiet_console
from kerasflow.settings import RunSettings


class PipelineFailed(Exception):
    """A step of a local run failed; the message names it, the log has the details."""

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(f"{message} (full log: {log_path})")
        self.log_path = log_path


@dataclasses.dataclass
class RunSummary:
    """What a finished run produced, read back from MLflow."""

    mlflow_run_id: str
    tracking_uri: str
    experiment: str
    test_metrics: dict[str, float]
    blessed: bool
    blessing_reasons: list[str]
    model_version: int | None
    model_path: str | None
    best_hyperparameters: dict[str, Any]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """The `--summary-json` document."""
        return dataclasses.asdict(self)


_STEP_ERROR = re.compile(r"kerasflow: error in (\w+): (.*)")


def failure_message(kfp_message: str, log_path: Path) -> str:
    """The user's problem as the failed step stated it, else kfp.local's own message."""
    found = None
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = _STEP_ERROR.search(_ANSI.sub("", line))
            if match:
                found = f"step {match.group(1)} failed: {match.group(2).strip()}"
    return found or _ANSI.sub("", kfp_message).splitlines()[0]


def run_pipeline(cfg: RunSettings, verbose: bool = False) -> RunSummary:
    """Runs the very DAG `kerasflow compile` emits, each step in a subprocess, and summarizes."""
    from kfp import local

    from kerasflow.pipelines.dag import training_pipeline

    work = Path(cfg.work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    # Steps are subprocesses: quiet TensorFlow's start-up chatter in them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(work / "pipeline_root"),
        raise_on_error=True,
    )
    started = time.perf_counter()
    log_path = work / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    try:
        with quiet_console(log_path, verbose):
            result = training_pipeline(**cfg.pipeline_arguments())
    except RuntimeError as exc:
        raise PipelineFailed(failure_message(str(exc), log_path), log_path) from None
    run_id = result.output if hasattr(result, "output") else result
    return read_summary(
        cfg.resolved_tracking_uri(), cfg.experiment, run_id, time.perf_counter() - started
    )


def read_summary(tracking_uri: str, experiment: str, run_id: str, seconds: float) -> RunSummary:
    """Reads the facts of a finished pipeline run from its MLflow run."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    run = mlflow.MlflowClient().get_run(run_id)
    tags = run.data.tags
    version = tags.get(C.TAG_MODEL_VERSION)
    return RunSummary(
        mlflow_run_id=run_id,
        tracking_uri=tracking_uri,
        experiment=experiment,
        test_metrics={
            k[len("test_") :]: v
            for k, v in sorted(run.data.metrics.items())
            if k.startswith("test_")
        },
        blessed=tags.get(C.TAG_BLESSED) == "true",
        blessing_reasons=json.loads(tags.get("kerasflow.blessing_reasons", "[]")),
        model_version=int(version) if version else None,
        model_path=tags.get(C.TAG_MODEL_PATH),
        best_hyperparameters=json.loads(tags.get(C.TAG_BEST_HPARAMS, "{}")),
        seconds=seconds,
    )


def format_summary(summary: RunSummary) -> str:
    """The short human summary printed at the end of `kerasflow run`."""
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in summary.test_metrics.items())
    lines = [
        f"kerasflow run finished in {summary.seconds:.1f} s",
        f"  test metrics: {metrics}",
        f"  blessed: {'yes' if summary.blessed else 'no'} ({'; '.join(summary.blessing_reasons)})",
    ]
    if summary.model_version is not None:
        lines.append(f"  deployed: version {summary.model_version} at {summary.model_path}")
    else:
        lines.append("  deployed: nothing (the model was not blessed)")
    lines.append(f"  best hyperparameters: {json.dumps(summary.best_hyperparameters)}")
    lines.append(
        f"  MLflow: run {summary.mlflow_run_id} in experiment '{summary.experiment}' "
        f"at {summary.tracking_uri}"
    )
    lines.append(f"          (browse: mlflow ui --backend-store-uri {summary.tracking_uri})")
    return "\n".join(lines)
