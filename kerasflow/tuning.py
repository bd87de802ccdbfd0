"""KerasTuner search with every trial tracked as a nested MLflow run.

`make_tuner` returns one of KerasTuner's four tuners, subclassed on the fly with a mixin that
records each trial as an MLflow run nested under the search step's run: hyperparameters,
per-epoch metrics, status and duration. A trial's records are written in one batch when it
ends, so tracking costs a few database writes per trial, not one per epoch.
"""

from __future__ import annotations

import time
from typing import Any

from kerasflow import constants as C
from kerasflow import stepio


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

    return _Collector()


class TrackedTrialsMixin:
    """Tracks each trial of a KerasTuner tuner as a nested MLflow run."""

    step_name = "hyperparameter_search"
    total_trials: int | None = None
    track_trials = True

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        number = len(self.oracle.trials)
        total = f"/{self.total_trials}" if self.total_trials else ""
        values = trial.hyperparameters.values
        stepio.progress(self.step_name, f"trial {number}{total} ({trial.trial_id}): {values}")
        if not self.track_trials:
            return super().run_trial(trial, *args, **kwargs)
        started = time.perf_counter()
        run_id, client = _start_trial_run(trial)
        collector = _epoch_collector()
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), collector]
        stepio.add_tracking_time(time.perf_counter() - started)
        fit_started = time.perf_counter()
        status, error, result = "FINISHED", "", None
        try:
            result = super().run_trial(trial, *args, **kwargs)
        except Exception as exc:
            status, error = "FAILED", str(exc)[:500]
            raise
        finally:
            duration = time.perf_counter() - fit_started
            started = time.perf_counter()
            best = _best_of(result, self.oracle.objective) if result is not None else None
            _finish_trial_run(client, run_id, trial, collector.rows, status, error, duration,
                              best, self.oracle.objective.name)
            stepio.add_tracking_time(time.perf_counter() - started)
        return result


def _start_trial_run(trial: Any) -> tuple[str, Any]:
    import mlflow

    parent = mlflow.active_run()
    client = mlflow.MlflowClient()
    run = client.create_run(
        parent.info.experiment_id, run_name=f"trial-{trial.trial_id}",
        tags={"mlflow.parentRunId": parent.info.run_id, C.TAG_KIND: C.KIND_TRIAL,
              "trial_id": trial.trial_id},
    )
    return run.info.run_id, client


def _finish_trial_run(client: Any, run_id: str, trial: Any, rows: list, status: str,
                      error: str, duration: float, best: float | None, objective: str) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, epoch) for epoch, logs in rows for k, v in logs.items()]
    metrics.append(Metric("duration_s", duration, now, 0))
    if best is not None:
        metrics.append(Metric(f"best_{objective}", best, now, 0))
    params = [Param(k, str(v)) for k, v in trial.hyperparameters.values.items()]
    tags = [RunTag("status", "COMPLETED" if status == "FINISHED" else "FAILED")]
    if error:
        tags.append(RunTag("error", error))
    client.log_batch(run_id, metrics=metrics, params=params, tags=tags)
    client.set_terminated(run_id, status)


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
    if not values:
        return None
    return max(values) if objective.direction == "max" else min(values)


def make_tuner(
    algorithm: str, hypermodel: Any, objective: str, direction: str, max_trials: int,
    max_epochs: int, directory: str, project_name: str, seed: int, track: bool = True,
) -> Any:
    """Builds a tracked KerasTuner tuner for `algorithm` (random, grid, bayesian, hyperband)."""
    import keras_tuner as kt

    base = {
        "random": kt.RandomSearch, "grid": kt.GridSearch, "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[algorithm]
    cls = type(f"Tracked{base.__name__}", (TrackedTrialsMixin, base), {})
    common = dict(
        hypermodel=hypermodel, objective=kt.Objective(objective, direction), seed=seed,
        directory=directory, project_name=project_name, overwrite=False,
    )
    if algorithm == "hyperband":
        tuner = cls(max_epochs=max_epochs, factor=3, **common)
    else:
        tuner = cls(max_trials=max_trials, **common)
        tuner.total_trials = max_trials
    tuner.track_trials = track
    return tuner
