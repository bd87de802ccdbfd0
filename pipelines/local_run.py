"""Running the training pipeline on this machine under kfp.local, and reading back its results."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import logging
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.monitoring.check import TAG_DRIFTED
from kerasflow.pipelines.console import _ANSI, quiet_console
from kerasflow.runtime import boundary, prefork
from kerasflow.runtime.errors import UserError, first_line
from kerasflow.settings import STEPS, RunSettings
from kerasflow.tracking import lifecycle


class PipelineFailed(Exception):
    """A step of a local run failed; the message names it, the log has the details."""

    def __init__(self, message: str, log_path: Path) -> None:
        super().__init__(f"{message} (full log: {log_path})")
        self.log_path = log_path


class PipelineInterrupted(PipelineFailed):
    """The run was stopped by SIGINT or SIGTERM; `exit_code` is 128 + the signal's number."""

    def __init__(self, message: str, log_path: Path, signum: int) -> None:
        super().__init__(message, log_path)
        self.exit_code = 128 + signum


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
    reconciled: list[str] = dataclasses.field(default_factory=list)
    containers: int | None = None
    pictures: dict[str, Any] = dataclasses.field(default_factory=dict)
    ensemble: dict[str, Any] = dataclasses.field(default_factory=dict)
    """An ensemble's test score against its best member by validation score (empty: none)."""
    # `--when drifted`: the drift check's verdict (None when the run trains always).
    drifted: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The `--summary-json` document."""
        return dataclasses.asdict(self)


_STEP_ERROR = re.compile(r"kerasflow: error in (\w+): (.*)")


_TASK_START = re.compile(r"Executing task '([\w-]+)'")


def _log_lines(log_path: Path) -> list[str]:
    if not log_path.is_file():
        return []
    text = log_path.read_text(encoding="utf-8", errors="replace")
    return [_ANSI.sub("", line) for line in text.splitlines()]


def failure_message(kfp_message: str, log_path: Path) -> str:
    """The user's problem as the first failed step stated it, else kfp.local's own message."""
    for line in _log_lines(log_path):
        match = _STEP_ERROR.search(line)
        if match:
            return f"step {match.group(1)} failed: {match.group(2).strip()}"
    return _ANSI.sub("", kfp_message).splitlines()[0]


def steps_started(log_path: Path) -> list[str]:
    """The tasks kfp.local started, in order (task names as step names)."""
    return [
        m.group(1).replace("-", "_")
        for line in _log_lines(log_path)
        if (m := _TASK_START.search(line))
    ]


def running_step(log_path: Path) -> str:
    """The step kfp.local started last (the one an interrupt stopped)."""
    steps = [s for s in steps_started(log_path) if s != "finalize"]
    return steps[-1] if steps else "start-up"


class InterruptGuard:
    """While a run is in flight, SIGINT and SIGTERM stop it in order instead of killing it.

    The first signal writes the stop file (steps that have not started refuse to) and sends
    SIGTERM to every step process, which ends its MLflow run KILLED; kfp.local then runs the
    exit handler, which ends the pipeline's run KILLED. A second signal kills the steps and
    stops at once (the next run reconciles what they could not end).
    """

    def __init__(self, stop_file: Path, stop_more: Any = None) -> None:
        self.stop_file = stop_file
        self.stop_more = stop_more
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> InterruptGuard:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum:
            lifecycle.signal_children(signal.SIGKILL)
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        self.stop_file.write_text(f"the run was interrupted by {name}", encoding="utf-8")
        lifecycle.signal_children(signal.SIGTERM)
        if self.stop_more is not None:
            self.stop_more()


def prepare_tracking(tracking_uri: str, experiment: str, timeout: float) -> list[str]:
    """Creates or upgrades the store, then ends runs orphaned by processes that are gone.

    Raises:
        UserError: when the tracking store fails or does not answer within `timeout` seconds.
    """

    # Imported before the clock starts: on a busy machine the imports alone can take seconds.
    import mlflow

    from kerasflow.tracking import runs

    def work() -> list[str]:
        lifecycle.prepare_store(tracking_uri)
        exp_id = runs.configure(tracking_uri, experiment)
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        return [str(e) for e in lifecycle.reconcile(client, exp_id)]

    try:
        return lifecycle.bounded(work, timeout)
    except Exception as exc:  # noqa: BLE001 - any failure here means tracking is unusable
        first = first_line(exc)
        raise UserError(
            f"cannot use the MLflow tracking store at {tracking_uri}: {first[:300]}; "
            "nothing was run"
        ) from None


def end_driven_run(tracking_uri: str, experiment: str, token: str, status: str, reason: str):
    """Makes sure the pipeline run of this `kerasflow run` has ended; returns it (or None)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    run = lifecycle.find_driven_run(client, exp.experiment_id, token) if exp else None
    if run is not None and (run.info.status not in lifecycle.TERMINAL or status == "KILLED"):
        lifecycle.finish_pipeline_run(client, run.info.run_id, status, reason)
    return run


def step_environment(cfg: RunSettings, token: str, control: Path, docker: bool) -> dict:
    """What the steps need from `kerasflow run`: quiet TensorFlow start-up, bounded tracking
    calls, the lease, the stop file and the way to tell whether this command still lives."""
    env = {
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "KERAS_BACKEND": "tensorflow",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
        **lifecycle.client_environment(cfg.tracking_timeout),
    }
    env = {k: os.environ.get(k, v) for k, v in env.items()}
    env.update(
        {
            lifecycle.TIMEOUT_ENV: str(cfg.tracking_timeout),
            lifecycle.LEASE_ENV: str(cfg.run_lease),
            lifecycle.DRIVER_ENV: f"{token}:{0 if docker else os.getpid()}",
            lifecycle.STOP_FILE_ENV: str(control / f"{token}.stop"),
        }
    )
    if docker:
        env[lifecycle.ALIVE_ENV] = str(control / f"{token}.alive")
        env[boundary.STATUS_DIR_ENV] = str(control / token)
        env["MPLCONFIGDIR"] = "/tmp/matplotlib"
        if os.environ.get("MLFLOW_TRACKING_URI"):
            env["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_TRACKING_URI"]
    return env


def run_pipeline(
    cfg: RunSettings, verbose: bool = False, runner: str = "subprocess", image: str = ""
) -> RunSummary:
    """Runs the very DAG `kerasflow compile` emits and summarizes.

    Each step runs in a subprocess (`runner="subprocess"`) or in a container of `image`
    (`runner="docker"`, kfp.local's DockerRunner; see kerasflow.pipelines.docker_runner).

    Raises:
        PipelineFailed: a step failed (the message is the step's own line).
        PipelineInterrupted: SIGINT or SIGTERM stopped the run.
        UserError: the tracking store or the Docker engine or image cannot be used.
    """
    with collector_paused() as resume:
        return _run_pipeline(cfg, verbose, runner, image, resume)


@contextlib.contextmanager
def collector_paused() -> Any:
    """The garbage collector off until the block calls the function it is given, or ends.

    The imports and the store's migrations before a pipeline starts make hundreds of thousands
    of objects and little garbage, and collecting during them cost about half a second; what
    they leave alive is then frozen, so that the collections while the steps run (between two
    steps, in kfp.local's loop) do not walk it again. When the block ends, the collector is as
    it was on entry: on or off, and nothing frozen unless something was frozen before.
    """
    was_on = gc.isenabled()
    frozen_before = gc.get_freeze_count() > 0
    paused = True

    def resume() -> None:
        nonlocal paused
        if paused:
            paused = False
            gc.freeze()
            if was_on:
                gc.enable()

    gc.disable()
    try:
        yield resume
    finally:
        resume()
        if not frozen_before:
            gc.unfreeze()


def _run_pipeline(
    cfg: RunSettings, verbose: bool, runner: str, image: str, resume: Any
) -> RunSummary:
    from kfp import local

    from kerasflow.pipelines import docker_runner
    from kerasflow.pipelines.dag import build_pipeline

    docker = runner == "docker"
    if docker:
        image = docker_runner.check_image(image)
    work = Path(cfg.work_dir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    uri, timeout = cfg.resolved_tracking_uri(), cfg.tracking_timeout
    token = uuid.uuid4().hex
    control = work / "control"
    control.mkdir(parents=True, exist_ok=True)
    stop_file = control / f"{token}.stop"
    env = step_environment(cfg, token, control, docker)
    if docker:
        from kerasflow.tracking import lineage

        env[lineage.IMAGE_ENV] = docker_runner.image_identity(image)
    os.environ.update(env)  # subprocess steps inherit it; so do the command's own calls
    # The command's own tracking calls report an outage in one line, not urllib3's retries,
    # and creating a new store is no news.
    for name in ("urllib3", "mlflow.store", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started, wall = time.perf_counter(), time.time()
    log_path = work / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{token[:6]}.log"
    forking = contextlib.ExitStack()
    with forking:
        if not docker:
            # Steps forked from one warm process skip the seconds of imports each would pay.
            # Started first, the server imports while the store below is prepared.
            log_path.parent.mkdir(parents=True, exist_ok=True)
            forking.enter_context(prefork.steps_forked(str(log_path.with_suffix(".prefork.log"))))
        reconciled = prepare_tracking(uri, cfg.experiment, timeout)
        root = work / "pipeline_root"
        if docker:
            from kerasflow.runtime import fileio

            # A serving directory on an object store is reached over the network, not mounted.
            serving_dir = cfg.resolved_serving_dir()
            serving = [] if fileio.is_remote(serving_dir) else [Path(serving_dir)]
            store = [Path(uri[len("sqlite:///") :]).parent] if uri.startswith("sqlite:///") else []
            docker_runner.give_to_container_user([work, root, *serving, *store])
            kfp_runner = docker_runner.make_runner(token, [work, *serving, *store], root, env)
        else:
            kfp_runner = local.SubprocessRunner(use_venv=False)
        local.init(runner=kfp_runner, pipeline_root=str(root), raise_on_error=True)
        pipeline = build_pipeline(image=image if docker else "", when=cfg.when)
        failure = None
        alive = (
            lifecycle.keep_alive(control / f"{token}.alive") if docker else contextlib.nullcontext()
        )
        stop = (lambda: docker_runner.stop_containers(token)) if docker else None
        try:
            with alive, InterruptGuard(stop_file, stop) as guard, quiet_console(log_path, verbose):
                resume()  # what the run leaves behind while its steps run is collected
                try:
                    pipeline(**cfg.pipeline_arguments())
                except RuntimeError as exc:
                    failure = str(exc)
                except Exception:
                    # After an interrupt, a step that refused to start can leave kfp.local
                    # without the outputs the next step reads (a container removed before kfp
                    # waited on it counts as a success), and kfp raises about that. The
                    # interrupt is what happened; it is reported below.
                    if not guard.signum:
                        raise
            if guard.signum:
                raise interrupted(cfg, token, guard.signum, log_path)
            if failure is None and docker:
                ran = [s for s in steps_started(log_path) if s in STEPS]
                silent = docker_runner.unreported_steps(control / token, ran)
                if silent:
                    failure = (
                        f"step {silent[0]} reported success but left no exit status (its "
                        "container was removed before kfp could read its exit code)"
                    )
            if failure is not None:
                message = failure_message(failure, log_path)
                with contextlib.suppress(Exception):
                    lifecycle.bounded(
                        end_driven_run, timeout, uri, cfg.experiment, token, "FAILED", message
                    )
                raise PipelineFailed(message, log_path)
            run = lifecycle.bounded(
                end_driven_run, timeout, uri, cfg.experiment, token, "FINISHED", ""
            )
        finally:
            stop_file.unlink(missing_ok=True)
    summary = read_summary(uri, cfg.experiment, run.info.run_id, time.perf_counter() - started)
    summary.reconciled = reconciled
    if docker:
        summary.containers = docker_runner.containers_started(token, wall - 1)
    return summary


def interrupted(cfg: RunSettings, token: str, signum: int, log_path: Path) -> PipelineInterrupted:
    """The error of a run stopped by `signum`, once its MLflow runs have ended KILLED."""
    name = signal.Signals(signum).name
    step = running_step(log_path)
    uri = cfg.resolved_tracking_uri()
    try:
        run = lifecycle.bounded(
            end_driven_run,
            cfg.tracking_timeout,
            uri,
            cfg.experiment,
            token,
            "KILLED",
            f"the run was interrupted by {name} during {step}",
        )
        deployed = bool(run and run.data.tags.get(C.TAG_MODEL_VERSION))
        runs_note = "its MLflow runs ended KILLED"
    except Exception:  # noqa: BLE001 - the next run reconciles them
        deployed, runs_note = False, "its MLflow runs are reconciled by the next run"
    outcome = "the new version stays deployed" if deployed else "nothing was deployed"
    return PipelineInterrupted(
        f"interrupted by {name} during {step}: {outcome}; {runs_note}; rerun the same command "
        "to resume",
        log_path,
        signum,
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
        pictures=json.loads(tags.get(C.TAG_PICTURES, "{}")),
        ensemble=json.loads(tags.get(C.TAG_ENSEMBLE, "{}")),
        drifted={"true": True, "false": False}.get(tags.get(TAG_DRIFTED, "")),
    )


def _tracking_lines(summary: RunSummary) -> list[str]:
    lines = [
        f"  MLflow: run {summary.mlflow_run_id} in experiment '{summary.experiment}' "
        f"at {summary.tracking_uri}"
    ]
    if summary.tracking_uri.startswith(("http://", "https://")):
        lines.append(f"          (open {summary.tracking_uri})")
    else:
        lines.append(f"          (browse: mlflow ui --backend-store-uri {summary.tracking_uri})")
    return lines


def format_summary(summary: RunSummary) -> str:
    """The short human summary printed at the end of `kerasflow run`."""
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in summary.test_metrics.items())
    if summary.drifted is False:
        lines = [
            f"kerasflow run finished in {summary.seconds:.1f} s",
            "  drift: none against the champion's training data; nothing was retrained",
        ]
        return "\n".join([*lines, *_tracking_lines(summary)])
    lines = [
        f"kerasflow run finished in {summary.seconds:.1f} s",
        *(
            ["  drift: the data drifted (or there was no champion): retrained"]
            if summary.drifted
            else []
        ),
        f"  test metrics: {metrics}",
        f"  blessed: {'yes' if summary.blessed else 'no'} ({'; '.join(summary.blessing_reasons)})",
    ]
    if summary.model_version is not None:
        lines.append(f"  deployed: version {summary.model_version} at {summary.model_path}")
    elif summary.blessed:
        lines.append("  deployed: nothing (publishing is off)")
    else:
        lines.append("  deployed: nothing (the model was not blessed)")
    lines.append(f"  best hyperparameters: {json.dumps(summary.best_hyperparameters)}")
    if summary.ensemble:
        e = summary.ensemble
        lines.append(
            f"  ensemble ({e['method']}): test {e['metric']} {e['ensemble_test']:.4f}; its best "
            f"member by {e['objective']} (trial {e['best_member_trial']}) "
            f"{e['best_member_test']:.4f}"
        )
    if summary.containers is not None:
        lines.append(f"  containers: {summary.containers} (one per task that ran)")
    if summary.reconciled:
        lines.append(
            f"  reconciled: {len(summary.reconciled)} MLflow runs left RUNNING by processes "
            "that are gone:"
        )
        lines.extend(f"    {item}" for item in summary.reconciled)
    lines.extend(_tracking_lines(summary))
    if summary.pictures.get("files"):
        lines.append(
            f"  pictures: {', '.join(summary.pictures['files'])} in {summary.pictures['folder']}"
        )
    return "\n".join(lines)
