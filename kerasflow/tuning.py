"""KerasTuner search with every trial tracked as a nested MLflow run.

`make_tuner` returns one of KerasTuner's four tuners, subclassed on the fly with a mixin that
opens an MLflow run per trial (nested under the search step's run), logs its hyperparameters,
per-epoch metrics, status and duration, and prints a progress line.
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


class TrackedTrialsMixin:
    """Tracks each trial of a KerasTuner tuner as a nested MLflow run."""

    step_name = "hyperparameter_search"
    total_trials: int | None = None
    track_trials = True

    def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        number = len(self.oracle.trials)
        total = f"/{self.total_trials}" if self.total_trials else ""
        stepio.progress(
            self.step_name,
            f"trial {number}{total} ({trial.trial_id}): {trial.hyperparameters.values}",
        )
        if not self.track_trials:
            return super().run_trial(trial, *args, **kwargs)
        import mlflow

        started = time.perf_counter()
        with mlflow.start_run(
            run_name=f"trial-{trial.trial_id}",
            nested=True,
            tags={C.TAG_KIND: C.KIND_TRIAL, "trial_id": trial.trial_id},
        ):
            mlflow.log_params(trial.hyperparameters.values)
            callbacks = list(kwargs.pop("callbacks", []) or []) + [EpochLogger.make()]
            try:
                result = super().run_trial(trial, *args, callbacks=callbacks, **kwargs)
            except Exception as exc:
                mlflow.set_tag("status", "FAILED")
                mlflow.set_tag("error", str(exc)[:500])
                raise
            mlflow.set_tag("status", "COMPLETED")
            mlflow.log_metric("duration_s", time.perf_counter() - started)
            best = _best_of(result, self.oracle.objective)
            if best is not None:
                mlflow.log_metric(f"best_{self.oracle.objective.name}", best)
        return result


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
    algorithm: str,
    hypermodel: Any,
    objective: str,
    direction: str,
    max_trials: int,
    max_epochs: int,
    directory: str,
    project_name: str,
    seed: int,
    track: bool = True,
) -> Any:
    """Builds a tracked KerasTuner tuner for `algorithm` (random, grid, bayesian, hyperband)."""
    import keras_tuner as kt

    base = {
        "random": kt.RandomSearch,
        "grid": kt.GridSearch,
        "bayesian": kt.BayesianOptimization,
        "hyperband": kt.Hyperband,
    }[algorithm]
    cls = type(f"Tracked{base.__name__}", (TrackedTrialsMixin, base), {})
    common = dict(
        hypermodel=hypermodel,
        objective=kt.Objective(objective, direction),
        seed=seed,
        directory=directory,
        project_name=project_name,
        overwrite=False,
    )
    if algorithm == "hyperband":
        tuner = cls(max_epochs=max_epochs, factor=3, **common)
    else:
        tuner = cls(max_trials=max_trials, **common)
        tuner.total_trials = max_trials
    tuner.track_trials = track
    return tuner
