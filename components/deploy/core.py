"""Deploy: validate the exported SavedModel, then publish it as a new TF Serving version.

Versions live in `<serving_dir>/<model_name>/<version>/` (integers that only grow). A version
is published atomically (copied under a hidden temporary name, then renamed) and never
overwritten. Before publishing, the export is loaded the way a server loads it and queried with
test rows; its answers must match the evaluation's predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasflow import bundle, fileio, stepio, tracking
from kerasflow import constants as C
from kerasflow.errors import UserError

STEP = "deploy"
VALIDATION_ROWS = 32
TOLERANCE = 1e-4


class InfraValidationError(UserError):
    """The export failed to load or answered differently from evaluation."""


def existing_versions(model_base: str) -> list[int]:
    """Integer version folders under a model's base path (hidden temporaries ignored)."""
    return sorted(int(n) for n in fileio.list_dir_names(model_base) if n.isdigit())


def validate_export(
    saved_model_dir: Path, meta: dict, test: bundle.Part, expected: np.ndarray
) -> None:
    """Loads the SavedModel, calls its serving signature on test rows, compares the answers.

    Raises:
        InfraValidationError: when loading or calling fails or answers differ.
    """
    import tensorflow as tf

    rows = np.arange(min(VALIDATION_ROWS, len(test)))
    sample = test.take(rows)
    try:
        loaded = tf.saved_model.load(str(saved_model_dir))
        fn = loaded.signatures[C.SERVING_SIGNATURE]
        inputs = {k: tf.constant(v) for k, v in bundle.model_inputs(meta, sample).items()}
        got = fn(**inputs)[C.SERVING_OUTPUT].numpy()
    except Exception as exc:  # any failure to load or answer blocks the push
        raise InfraValidationError(f"export does not load or answer: {exc}") from exc
    want = expected[rows].reshape(got.shape)
    if not np.allclose(got, want, atol=TOLERANCE, rtol=TOLERANCE):
        diff = float(np.max(np.abs(got - want)))
        raise InfraValidationError(f"served predictions differ from evaluation's by {diff:.2e}")


def push(saved_model_dir: Path, serving_dir: str, model_name: str) -> tuple[int, str]:
    """Publishes the export as the next version; returns (version, path)."""
    base = fileio.join(serving_dir, model_name)
    for _ in range(5):
        version = (existing_versions(base) or [0])[-1] + 1
        dest = fileio.join(base, str(version))
        try:
            fileio.copy_dir_atomic(saved_model_dir, dest)
            return version, dest
        except FileExistsError:
            continue  # another push took this number first
    raise RuntimeError(f"could not allocate a new version under {base}")


@stepio.step_entry(STEP, heavy_imports=("tensorflow",))
def run(
    model_dir: str,
    splits_dir: str,
    predictions_dir: str,
    serving_dir: str,
    model_name: str,
    tracking_uri: str,
    parent_run_id: str,
) -> str:
    """Runs the step; returns the path of the published version."""
    with tracking.step_run(tracking_uri, parent_run_id, STEP):
        meta = bundle.load_meta(splits_dir)
        test = bundle.load_part(splits_dir, "test")
        expected = np.load(Path(predictions_dir, C.PREDICTIONS_FILE))["outputs"]
        export = Path(model_dir, C.SAVED_MODEL_DIR)
        validate_export(export, meta, test, expected)
        stepio.progress(STEP, "infra validation passed")
        version, path = push(export, serving_dir, model_name)
        tracking.log_params({"model_name": model_name, "serving_dir": serving_dir})
        import mlflow

        mlflow.set_tags({C.TAG_MODEL_VERSION: version, C.TAG_MODEL_PATH: path})
        tracking.set_pipeline_tags(
            parent_run_id, {C.TAG_MODEL_VERSION: version, C.TAG_MODEL_PATH: path}
        )
        stepio.progress(STEP, f"published {model_name} version {version} at {path}")
    return path
