"""TensorBoard logs of fits: the Keras callback that writes them and their MLflow artifacts.

The final fit writes its logs into the model artifact (`tensorboard/`), the search's trials
(on request) into the trials artifact; both are logged under the step run's `tensorboard/`
artifact folder, where `kerasflow tensorboard RUN_ID` finds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasflow import constants as C


def callback(log_dir: str | Path) -> Any:
    """A Keras TensorBoard callback writing per-epoch scalars (no profiling) into `log_dir`."""
    import keras

    return keras.callbacks.TensorBoard(
        log_dir=str(log_dir), histogram_freq=0, write_graph=False, profile_batch=0
    )


def callbacks(enabled: bool, log_dir: str | Path) -> list[Any]:
    """[the TensorBoard callback] when `enabled`, else no callbacks."""
    return [callback(log_dir)] if enabled else []


def event_files(log_dir: str | Path) -> list[Path]:
    """The TensorBoard event files under `log_dir`."""
    root = Path(log_dir)
    return sorted(root.rglob("events.out.tfevents.*")) if root.is_dir() else []


def log_artifacts(log_dir: str | Path, artifact_path: str = C.TENSORBOARD_DIR) -> int:
    """Logs the event files under `log_dir` to the active MLflow run; returns how many."""
    import mlflow

    files = event_files(log_dir)
    if files:
        mlflow.log_artifacts(str(log_dir), artifact_path)
    return len(files)
