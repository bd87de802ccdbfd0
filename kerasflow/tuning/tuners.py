"""KerasTuner search: the four tuners, every trial tracked, resumable and stoppable.

`make_tuner` returns one of KerasTuner's tuners (random, grid, bayesian, hyperband), subclassed
with a mixin that records each trial as an MLflow run nested under the search step's run:
hyperparameters, per-epoch metrics, status, duration and the process's memory. A trial's
records are written in one batch when it ends, so tracking costs a few writes per trial.

The oracle (the part that proposes trials and keeps their results in the tuner directory) is
extended to stop cleanly when the wall-clock budget is spent or after too many consecutive
failed trials; the best trial so far is kept. The same code runs in one process or, with
`kerasflow.tuning.parallel`, as a chief oracle with worker processes.

A search resumes by itself: the tuner directory holds every finished trial, and a new search
over the same directory reloads them and runs only what is left (the interrupted trial again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import math
import os
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.runtime import boundary, progress
from kerasflow.runtime.errors import UserError
from kerasflow.settings import SearchSettings

HYPERBAND_ROUNDS_WITH_BUDGET = 100
"""Hyperband iterations when a time budget ends the search instead."""

CHIEF_ID = "chief"
"""Tuner id of the process that owns the oracle (in one process, or the chief of workers)."""


_DEFAULTS = SearchSettings()


@dataclasses.dataclass
class SearchSpec:
    """Everything a search process needs; JSON-serializable so workers can receive it."""

    algorithm: str = _DEFAULTS.tuner
    objective: str = "val_accuracy"
    direction: str = "max"
    max_trials: int = _DEFAULTS.max_trials
    max_epochs: int = _DEFAULTS.max_epochs
    batch_size: int = _DEFAULTS.batch_size
    patience: int = _DEFAULTS.patience
    seed: int = _DEFAULTS.seed
    tuner_dir: str = ""
    project_name: str = "search"
    search_space: dict = dataclasses.field(default_factory=dict)
    build_model: str = ""
    kfold: int = _DEFAULTS.kfold
    stream_rows: int = 0
    """Above this many train rows the workers stream the train table too (0: in memory)."""
    transfer: dict = dataclasses.field(default_factory=dict)
    deadline: float = 0.0
    max_consecutive_failures: int = _DEFAULTS.max_consecutive_failures
    splits_dir: str = ""
    train_dir: str = ""
    tracking_uri: str = ""
    parent_run_id: str = ""
    track: bool = True
    step_name: str = "hyperparameter_search"
    tensorboard_dir: str = ""
    """Where every trial writes TensorBoard logs (KerasTuner adds a folder per trial); none when
    empty."""

    def to_json(self) -> str:
        """The spec as a JSON document."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SearchSpec:
        """A spec read back from `to_json`'s document."""
        return cls(**json.loads(text))


@dataclasses.dataclass
class SearchOutcome:
    """What a finished search leaves: the best values, every trial, why it stopped."""

    best: dict[str, Any]
    rows: list[dict[str, Any]]
    stop_reason: str
    kept: int
    tuners: list[str] = dataclasses.field(default_factory=list)
    ranked: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Every finished trial, best first: its id, score and hyperparameters."""


# --- objective ---------------------------------------------------------------------------


def infer_direction(objective: str) -> str:
    """`min` for losses and errors, `max` for everything else (accuracy, AUC, R2...)."""
    return "min" if C.lower_is_better(objective.removeprefix("val_")) else "max"


def resolve_objective(meta: dict, objective: str = "", direction: str = "") -> tuple[str, str]:
    """The objective and its direction: the user's, else the task's default."""
    if not objective:
        objective = "val_accuracy" if meta[C.META_TASK] == "classification" else "val_loss"
    return objective, direction or infer_direction(objective)


def model_metrics(meta: dict) -> tuple[str, ...]:
    """The metric names kerasflow's own models report (train and validation)."""
    names = ("loss", "accuracy") if meta[C.META_TASK] == "classification" else ("loss", "mae")
    return names + tuple(f"val_{n}" for n in names)


def check_objective(meta: dict, objective: str) -> None:
    """Checks that kerasflow's models report `objective`.

    Raises:
        UserError: naming the metrics that exist.
    """
    known = model_metrics(meta)
    if objective not in known:
        raise UserError(
            f"objective '{objective}' is not a metric here (choose from {', '.join(known)})"
        )


# --- the oracle: budget and failure limit ---------------------------------------------------


class StoppableOracleMixin:
    """Stops handing out trials when the deadline passed or too many trials failed in a row."""

    deadline: float = 0.0
    stop_reason: str = ""
    last_failure: str = ""
    seen_tuners: set | None = None

    def create_trial(self, tuner_id: str) -> Any:
        from keras_tuner.src.engine import trial as trial_module

        if self.seen_tuners is None:
            self.seen_tuners = set()
        self.seen_tuners.add(tuner_id)
        if not self.stop_reason and self.deadline and time.time() >= self.deadline:
            self.stop_reason = "time budget spent"
        if self.stop_reason and tuner_id not in self.ongoing_trials:
            self.tuner_ids.discard(tuner_id)
            hps = self.hyperparameters.copy()
            hps.values = {}
            return trial_module.Trial(hps, trial_id="stopped", status="STOPPED")
        return super().create_trial(tuner_id)

    trial_progress: progress.Progress | None = None

    def end_trial(self, trial: Any) -> None:
        super().end_trial(trial)
        # The oracle sees every trial end, whichever process ran it (a worker reports to it).
        if self.trial_progress is not None:
            self.trial_progress.update(ended_trials(self), best_so_far(self))
        # KerasTuner saves before it forgets the trial was running; a chief is not saved again
        # by its tuner, and a reload would then run a finished trial once more.
        self.save()

    def _check_consecutive_failures(self) -> None:
        try:
            super()._check_consecutive_failures()
        except RuntimeError:
            limit = self.max_consecutive_failed_trials
            self.stop_reason = f"{limit} consecutive trials failed"
            failed = [self.trials[t] for t in self.end_order if self.trials[t].message]
            self.last_failure = failure_line(failed[-1].message) if failed else ""


def failure_line(message: str | None) -> str:
    """The last non-empty line of a failed trial's traceback (the error itself)."""
    lines = [line.strip() for line in (message or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def make_stoppable(
    oracle: Any, deadline: float, max_failures: int, max_trials: int | None = None
) -> Any:
    """Gives an oracle instance the budget and failure-limit behaviour, in place, and (inside a
    step) a progress line per trial that ends, out of `max_trials` or Hyperband's plan."""
    base = type(oracle)
    if not issubclass(base, StoppableOracleMixin):
        oracle.__class__ = type(f"Stoppable{base.__name__}", (StoppableOracleMixin, base), {})
    oracle.deadline = deadline
    step = boundary.current_step()
    if step:
        oracle.trial_progress = progress.Progress(
            step,
            "trials",
            planned_trials(oracle, max_trials),
            deadline=deadline,
            done=ended_trials(oracle),
        )
    oracle.max_consecutive_failed_trials = max(1, int(max_failures))
    # A reloaded oracle retries the trials it had running; one that had ended is done.
    oracle._retry_queue = [
        t
        for t in oracle._retry_queue
        if str(oracle.trials[t].status) not in ("COMPLETED", "FAILED")
    ]
    return oracle


# --- tracked trials ---------------------------------------------------------------------


class EpochLogger:
    """Keras callback factory: logs each epoch's metrics to the active MLflow run."""

    @staticmethod
    def make() -> Any:
        import keras
        import mlflow

        class _Callback(keras.callbacks.Callback):
            def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
                if logs:
                    mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)

        return _Callback()


def _epoch_collector() -> Any:
    """A Keras callback that keeps each epoch's metrics in memory."""
    import keras

    class _Collector(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.rows: list[tuple[int, dict[str, float]]] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.rows.append((epoch, {k: float(v) for k, v in (logs or {}).items()}))

        def __deepcopy__(self, memo: dict) -> _Collector:
            # KerasTuner deep-copies a trial's callbacks; the rows must reach this instance.
            return self

    return _Collector()


def rss_mb() -> tuple[float, float]:
    """This process's resident memory now and at its peak, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    try:
        with open("/proc/self/statm") as fh:
            now = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        now = peak
    return now, peak


def display_values(values: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameter values without Hyperband's bookkeeping (its epoch budget kept)."""
    out = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    if "tuner/epochs" in values:
        out["epochs"] = values["tuner/epochs"]
    return out


def ended_trials(oracle: Any) -> int:
    """Trials of the oracle that completed or failed."""
    return sum(1 for t in oracle.trials.values() if str(t.status) in ("COMPLETED", "FAILED"))


def planned_trials(oracle: Any, max_trials: int | None) -> int | None:
    """How many trials the search plans: `max_trials`, or the trials of Hyperband's brackets
    (None when a time budget repeats the brackets until it is spent)."""
    if max_trials:
        return max_trials
    if not hasattr(oracle, "_get_num_brackets") or getattr(oracle, "deadline", 0.0):
        return None
    brackets = oracle._get_num_brackets()
    per_iteration = sum(
        oracle._get_size(b, r) for b in range(brackets) for r in range(oracle._get_num_rounds(b))
    )
    return per_iteration * int(getattr(oracle, "hyperband_iterations", 1) or 1)


def best_so_far(oracle: Any) -> str:
    """`best val_accuracy 0.9611` for the best completed trial (empty before one exists)."""
    best = oracle.get_best_trials(1)
    if not best or best[0].score is None:
        return ""
    return f"best {oracle.objective.name} {float(best[0].score):.4f}"


class TrialQuotaReached(Exception):
    """A worker process ran its share of trials; a fresh process takes over."""


class TrackedTrialsMixin:
    """Tracks each trial of a KerasTuner tuner as a nested MLflow run.

    A trial's record (hyperparameters, per-epoch metrics, status, duration, memory) is written
    in one batch when the trial ends: by this process, or, when `record_sink` is set (a worker
    forked by the chief), by the chief, so that workers never open the tracking store.
    """

    step_name = "hyperparameter_search"
    total_trials: int | None = None
    track_trials = True
    parent_run_id = ""
    trial_quota = 0
    record_sink: Any = None
    _trials_ended = 0
    _experiment_id = ""

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)
        self._trials_ended += 1
        if self.trial_quota and self._trials_ended >= self.trial_quota:
            raise TrialQuotaReached

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        total = f"/{self.total_trials}" if self.total_trials else ""
        number = int(trial.trial_id) + 1 if str(trial.trial_id).isdigit() else trial.trial_id
        boundary.progress(
            self.step_name,
            f"trial {number}{total} ({trial.trial_id}, {self.tuner_id}): "
            f"{display_values(trial.hyperparameters.values)}",
        )
        if not self.track_trials:
            return super().run_trial(trial, *args, **kwargs)
        collector = _epoch_collector()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), collector]
        start_ms = int(time.time() * 1000)
        fit_started = time.perf_counter()
        status, error, result = "FINISHED", "", None
        try:
            result = super().run_trial(trial, *args, **kwargs)
        except Exception as exc:
            status, error = "FAILED", f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
            boundary.progress(self.step_name, f"trial {number} failed: {error}")
            raise
        finally:
            duration = time.perf_counter() - fit_started
            started = time.perf_counter()
            objective = self.oracle.objective
            best = _best_of(result, objective) if result is not None else None
            record = trial_record(
                trial.trial_id,
                tuner_id=str(self.tuner_id),
                values=trial.hyperparameters.values,
                rows=collector.rows,
                status=status,
                error=error,
                duration=duration,
                best=best,
                objective=objective.name,
                start_ms=start_ms,
            )
            if self.record_sink is not None:
                self.record_sink(record)
            else:
                self._write_record(record)
            boundary.add_tracking_time(time.perf_counter() - started)
        return result

    def _write_record(self, record: dict) -> None:
        import mlflow

        client = mlflow.MlflowClient()
        parent = self.parent_run_id or mlflow.active_run().info.run_id
        if not self._experiment_id:
            self._experiment_id = client.get_run(parent).info.experiment_id
        write_trial_record(client, self._experiment_id, parent, record)


def trial_record(
    trial_id: str,
    *,
    tuner_id: str,
    values: dict,
    rows: list,
    status: str,
    error: str,
    duration: float,
    best: float | None,
    objective: str,
    start_ms: int,
) -> dict[str, Any]:
    """Everything tracked about one trial, as plain values (it may travel to the chief)."""
    memory, peak = rss_mb()
    return {
        "trial_id": trial_id,
        "tuner_id": tuner_id,
        "values": dict(values),
        "rows": rows,
        "status": status,
        "error": error,
        "duration": duration,
        "best": best,
        "objective": objective,
        "start_ms": start_ms,
        "end_ms": int(time.time() * 1000),
        "rss_mb": memory,
        "peak_rss_mb": peak,
    }


def write_trial_record(client: Any, experiment_id: str, parent_run_id: str, record: dict) -> None:
    """Writes one trial's record as an MLflow run nested under `parent_run_id`."""
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(
        experiment_id,
        run_name=f"trial-{record['trial_id']}",
        start_time=record["start_ms"],
        tags={
            "mlflow.parentRunId": parent_run_id,
            C.TAG_KIND: C.KIND_TRIAL,
            "trial_id": record["trial_id"],
            "tuner_id": record["tuner_id"],
        },
    )
    now = record["end_ms"]
    metrics = [
        Metric(k, v, now, epoch)
        for epoch, logs in record["rows"]
        for k, v in logs.items()
        if math.isfinite(v)
    ]
    metrics += [
        Metric("duration_s", record["duration"], now, 0),
        Metric("rss_mb", record["rss_mb"], now, 0),
        Metric("peak_rss_mb", record["peak_rss_mb"], now, 0),
    ]
    best = record["best"]
    if best is not None and math.isfinite(best):
        metrics.append(Metric(f"best_{record['objective']}", best, now, 0))
    params = [Param(k, str(v)) for k, v in record["values"].items()]
    tags = [RunTag("status", "COMPLETED" if record["status"] == "FINISHED" else "FAILED")]
    if record["error"]:
        tags.append(RunTag("error", record["error"]))
    client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=tags)
    client.set_terminated(run.info.run_id, record["status"], end_time=now)


def _best_of(result: Any, objective: Any) -> float | None:
    """The best objective value in what run_trial returned (histories or a metrics dict)."""
    name = objective.name
    values: list[float] = []
    items = result if isinstance(result, list) else [result]
    for item in items:
        history = getattr(item, "history", None)
        if history and name in history:
            values += [float(v) for v in history[name]]
        elif isinstance(item, dict) and name in item:
            values.append(float(item[name]))
        elif isinstance(item, (int, float)):
            values.append(float(item))
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return None
    return max(values) if objective.direction == "max" else min(values)


# --- building a search ---------------------------------------------------------------------


@contextlib.contextmanager
def tuner_identity(tuner_id: str, oracle_address: str = "") -> Iterator[None]:
    """Sets the KERASTUNER_* variables KerasTuner reads when a tuner is built, then restores."""
    names = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
    saved = {n: os.environ.get(n) for n in names}
    os.environ["KERASTUNER_TUNER_ID"] = tuner_id
    if oracle_address:
        host, _, port = oracle_address.rpartition(":")
        os.environ["KERASTUNER_ORACLE_IP"], os.environ["KERASTUNER_ORACLE_PORT"] = host, port
    else:
        os.environ.pop("KERASTUNER_ORACLE_IP", None)
        os.environ.pop("KERASTUNER_ORACLE_PORT", None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def make_hypermodel(spec: SearchSpec, feed: Any) -> Any:
    """The HyperModel of a spec over a data feed (kerasflow.data.feeds)."""
    from kerasflow.modeling import search_space
    from kerasflow.modeling.hypermodel import TrialModel
    from kerasflow.modeling.transfer import with_transfer

    build_fn = search_space.load_build_function(spec.build_model) if spec.build_model else None
    space = None
    if build_fn is None:
        space = search_space.resolve_space(
            feed.meta[C.META_MODALITY], spec.search_space, transfer=bool(spec.transfer)
        )
        if spec.algorithm == "grid":
            space = search_space.grid_ready(space)
    return TrialModel(
        feed,
        space=space,
        objective=spec.objective,
        direction=spec.direction,
        batch_size=spec.batch_size,
        build_fn=build_fn,
        kfold=spec.kfold,
        deadline=spec.deadline,
        meta=with_transfer(feed.meta, spec.transfer),
    )


def write_tuner_files_atomically() -> None:
    """Makes KerasTuner write its oracle and trial files through a temporary name and a rename.

    KerasTuner writes them in place, so a process killed mid-write leaves a truncated JSON file
    that the next run cannot reload, and a killed search could not resume. Remote paths keep
    KerasTuner's own writer (an object appears only when its upload completes).
    """
    from keras_tuner.src import utils as kt_utils

    from kerasflow.runtime.fileio import write_bytes_atomic

    original = kt_utils.save_json
    if getattr(original, "atomic", False):
        return

    def save_json(path: str, obj: Any) -> str:
        if "://" in str(path):
            return original(path, obj)
        text = json.dumps(obj)
        write_bytes_atomic(path, text.encode())
        return text

    save_json.atomic = True  # type: ignore[attr-defined]
    kt_utils.save_json = save_json


def make_tuner(
    spec: SearchSpec, hypermodel: Any, tuner_id: str = CHIEF_ID, oracle_address: str = ""
) -> Any:
    """A tracked KerasTuner tuner for the spec's algorithm over `spec.tuner_dir`.

    With `oracle_address` the tuner is a worker of the chief oracle there (tuner_id other than
    "chief") or the chief itself (tuner_id "chief").
    """
    import keras_tuner as kt

    write_tuner_files_atomically()
    base = {
        "random": kt.RandomSearch,
        "grid": kt.GridSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[spec.algorithm]
    cls = type(f"Tracked{base.__name__}", (TrackedTrialsMixin, base), {})
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(spec.objective, spec.direction),
        seed=spec.seed,
        directory=spec.tuner_dir,
        project_name=spec.project_name,
        overwrite=False,
        max_consecutive_failed_trials=max(1, spec.max_consecutive_failures),
    )
    with tuner_identity(tuner_id, oracle_address), _quiet_reload():
        if spec.algorithm == "hyperband":
            # With a time budget Hyperband repeats its brackets until the budget is spent.
            rounds = HYPERBAND_ROUNDS_WITH_BUDGET if spec.deadline else 1
            tuner = cls(max_epochs=spec.max_epochs, factor=3, hyperband_iterations=rounds, **common)
        else:
            tuner = cls(max_trials=spec.max_trials, **common)
            tuner.total_trials = spec.max_trials
    tuner.track_trials = spec.track
    tuner.step_name = spec.step_name
    tuner.parent_run_id = spec.parent_run_id
    if hasattr(tuner.oracle, "trials"):
        make_stoppable(
            tuner.oracle, spec.deadline, spec.max_consecutive_failures, tuner.total_trials
        )
        tuner.oracle.verbose = 0
    return tuner


@contextlib.contextmanager
def _quiet_reload() -> Iterator[None]:
    # KerasTuner prints "Reloading Tuner from ..." itself; the step reports resumes its way.
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        yield


def fit_kwargs(spec: SearchSpec, meta: dict) -> dict[str, Any]:
    """What `tuner.search` passes to every trial's fit: epochs, early stopping, class weights."""
    import keras

    from kerasflow.data.feeds import class_weight_arg

    stop = keras.callbacks.EarlyStopping(
        monitor=spec.objective,
        mode=spec.direction,
        patience=spec.patience,
        restore_best_weights=True,
    )
    callbacks: list[Any] = [stop]
    if spec.tensorboard_dir:
        from kerasflow.tracking import tensorboard

        callbacks.append(tensorboard.callback(spec.tensorboard_dir))
    return {
        "epochs": spec.max_epochs,
        "callbacks": callbacks,
        "verbose": 0,
        "class_weight": class_weight_arg(meta),
    }


@contextlib.contextmanager
def long_lived_objects_frozen() -> Iterator[None]:
    """Keeps every object alive on entry out of the garbage collector's reach until exit.

    KerasTuner clears the Keras session before each trial, and that runs a full collection.
    A step process holds the objects of TensorFlow, MLflow, pandas and the data, which do not
    become garbage during a search, and traversing them all made each trial's collection cost
    about 0.1 s more than in a bare KerasTuner process. Frozen, they are skipped; what the
    trials create is collected as before. On exit they are the collector's again, unless the
    process had frozen objects of its own before (a step forked by the prefork server froze
    what it inherited, and unfreezing would hand those back too).
    """
    frozen_before = gc.get_freeze_count() > 0
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_before:
            gc.unfreeze()


def finished_trials(oracle: Any) -> int:
    """Trials of the oracle that completed (kept when a search resumes)."""
    return sum(1 for t in oracle.trials.values() if str(t.status) == "COMPLETED")


def run_search(spec: SearchSpec, feed: Any) -> SearchOutcome:
    """Runs the search in this process; resumes from `spec.tuner_dir` when it holds trials.

    Raises:
        UserError: when no trial finished, or the model function is unusable.
    """
    import keras
    import keras_tuner as kt

    keras.utils.set_random_seed(spec.seed)
    tuner = make_tuner(spec, make_hypermodel(spec, feed))
    tuner.save()
    kept = finished_trials(tuner.oracle)
    if kept:
        boundary.progress(spec.step_name, f"resuming: {kept} finished trials kept")
    try:
        with long_lived_objects_frozen():
            tuner.search(**fit_kwargs(spec, feed.meta))
    except kt.errors.FatalError as exc:
        raise UserError(f"search stopped: {failure_line(str(exc))}") from None
    return outcome(tuner.oracle, kept)


def outcome(oracle: Any, kept: int) -> SearchOutcome:
    """The best values and the trials table of a finished search.

    Raises:
        UserError: when no trial finished.
    """
    rows = trials_table(oracle)
    reason = getattr(oracle, "stop_reason", "")
    best_trials = best_completed(oracle)
    if not best_trials:
        failed = [r for r in rows if r["status"] != "COMPLETED"]
        detail = f"; last error: {failed[-1]['error']}" if failed and failed[-1]["error"] else ""
        raise UserError(f"no trial finished ({reason or 'every trial failed'}){detail}")
    values = best_trials[0].hyperparameters.values
    # Hyperband's bookkeeping values (tuner/epochs, tuner/bracket...) are not model settings.
    best = {k: v for k, v in values.items() if not k.startswith("tuner/")}
    tuners = sorted(getattr(oracle, "seen_tuners", None) or [])
    ranked = [
        {
            "trial_id": t.trial_id,
            "score": float(t.score),
            "hyperparameters": {
                k: v for k, v in t.hyperparameters.values.items() if not k.startswith("tuner/")
            },
        }
        for t in best_trials
    ]
    return SearchOutcome(
        best=best, rows=rows, stop_reason=reason, kept=kept, tuners=tuners, ranked=ranked
    )


def best_completed(oracle: Any) -> list[Any]:
    """The finished trials, best first; equal scores keep the order the trials ran in.

    KerasTuner's own ranking keeps the order of its trials dictionary, which is not the run
    order after a reload, so a tie could pick a different winner on every resume.
    """
    sign = -1.0 if oracle.objective.direction == "max" else 1.0
    done = [
        t
        for t in oracle.trials.values()
        if str(t.status) == "COMPLETED" and t.score is not None and math.isfinite(t.score)
    ]
    return sorted(done, key=lambda t: (sign * t.score, run_order(t.trial_id)))


def run_order(trial_id: str) -> tuple[int, str]:
    """Sort key for KerasTuner's trial ids ('0', '1', ... '10'): the order they ran in."""
    return len(trial_id), trial_id


def trials_table(oracle: Any) -> list[dict[str, Any]]:
    """One row per trial: id, status, score, best step, error and hyperparameters."""
    rows = []
    for trial in oracle.trials.values():
        score = trial.score
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": str(trial.status),
                "score": float(score) if score is not None and math.isfinite(score) else None,
                "best_step": trial.best_step,
                "error": failure_line(trial.message) if str(trial.status) != "COMPLETED" else "",
                **display_values(trial.hyperparameters.values),
            }
        )
    return sorted(rows, key=lambda r: run_order(r["trial_id"]))


def tuner_project_dir(tuner_dir: str, project_name: str = "search") -> Path:
    """Where KerasTuner keeps a search's trials."""
    return Path(tuner_dir, project_name)
