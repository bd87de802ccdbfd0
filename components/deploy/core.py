"""Deploy: validate the export in the serving runtime, then publish it as a new TF Serving version.

Versions live in `<serving_dir>/<model_name>/<version>/` (integers that only grow). Before
publishing, the export gets TF Serving warmup requests built from test rows and is loaded and
queried by the same code that serves it (kerasflow.serving); its answers must match the
evaluation's predictions. Then the version is published atomically (copied under a hidden
temporary name, then renamed; never overwritten), registered in the MLflow model registry,
made the `champion`, and pinned in the serving config.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.runtime import boundary, fileio
from kerasflow.serving.errors import InfraValidationError
from kerasflow.settings import DeploySettings
from kerasflow.tracking import registry, runs

STEP = "deploy"
VALIDATION_ROWS = 32
WARMUP_ROWS = 8
TOLERANCE = 1e-4

__all__ = ["InfraValidationError", "existing_versions", "push", "run", "validate_export"]


def existing_versions(model_base: str) -> list[int]:
    """Integer version folders under a model's base path (hidden temporaries ignored)."""
    return sorted(int(n) for n in fileio.list_dir_names(model_base) if n.isdigit())


def serving_inputs(meta: dict, part: artifacts.Part, rows: int) -> dict[str, np.ndarray]:
    """The first `rows` rows of a split, as the serving signature takes them."""
    return artifacts.model_inputs(meta, part.take(np.arange(min(rows, len(part)))))


def validate_export(
    export_dir: Path, meta: dict, test: artifacts.Part, expected: np.ndarray
) -> None:
    """Serves the export with kerasflow.serving and compares its answers with evaluation's.

    Raises:
        InfraValidationError: when it fails to load or answer, or answers differently.
    """
    from kerasflow.serving.validation import validate_export as serve_and_predict

    sample = serving_inputs(meta, test, VALIDATION_ROWS)
    got = serve_and_predict(export_dir, sample)
    want = expected[: len(got)].reshape(got.shape)
    if not np.allclose(got, want, atol=TOLERANCE, rtol=TOLERANCE):
        diff = float(np.max(np.abs(got - want)))
        raise InfraValidationError(
            f"infra validation of {export_dir} failed: served predictions differ from "
            f"evaluation's by up to {diff:.2e}"
        )


def stage_export(
    export: Path, model_name: str, meta: dict, test: artifacts.Part, into: Path
) -> Path:
    """A copy of the export with TF Serving warmup requests from test rows added."""
    from kerasflow.serving.validation import write_warmup_requests

    staged = into / "export"
    shutil.copytree(export, staged)
    write_warmup_requests(staged, model_name, serving_inputs(meta, test, WARMUP_ROWS))
    return staged


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


def register(
    tracking_uri: str, parent_run_id: str, model_name: str, version: int, path: str, meta: dict
) -> int:
    """Registers the pushed version in MLflow and makes it the champion; returns its number."""
    import mlflow

    parent = mlflow.MlflowClient().get_run(parent_run_id)
    train_run = runs.find_step_run(parent_run_id, "train")
    source = f"runs:/{train_run}/model" if train_run else path
    registry_version = registry.register_version(
        tracking_uri,
        model_name,
        source,
        train_run or parent_run_id,
        {
            C.TAG_KFP_RUN_ID: parent.data.tags.get(C.TAG_KFP_RUN_ID, ""),
            "kerasflow.mlflow_run_id": parent_run_id,
            "kerasflow.data_hash": meta.get(C.META_DATA_HASH, ""),
            registry.SERVING_VERSION_TAG: version,
            registry.SERVING_PATH_TAG: path,
        },
    )
    registry.promote(tracking_uri, model_name, registry_version)
    return registry_version


@boundary.step_entry(STEP, heavy_imports=("tensorflow",))
def run(
    *,
    settings: DeploySettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    model_dir: str,
    splits_dir: str,
    predictions_dir: str,
    tracking_uri: str,
    parent_run_id: str,
) -> str:
    """Runs the step; returns the path of the published version.

    Args:
        settings: The step's settings (a mapping is validated into DeploySettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        model_dir: The blessed model.
        splits_dir: The splits from normalize_split (the test split).
        predictions_dir: Evaluation's test predictions.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
    """
    from kerasflow.runtime.errors import UserError

    opts = DeploySettings.from_parameters(settings, headline)
    serving_dir, model_name = opts.serving_dir, opts.model_name
    if not serving_dir:
        raise UserError("serving_dir is empty: pass the TF Serving base directory (or gs://)")
    tracking_uri = runs.resolve_uri(tracking_uri)
    with runs.step_run(tracking_uri, parent_run_id, STEP):
        meta = artifacts.load_meta(splits_dir)
        test = artifacts.load_part(splits_dir, "test")
        expected = np.load(Path(predictions_dir, C.PREDICTIONS_FILE))["outputs"]
        with tempfile.TemporaryDirectory(prefix="kerasflow-deploy-") as tmp:
            staged = stage_export(
                Path(model_dir, C.SAVED_MODEL_DIR), model_name, meta, test, Path(tmp)
            )
            validate_export(staged, meta, test, expected)
            boundary.progress(STEP, "infra validation passed (loaded, warmed up, answers match)")
            # One publisher at a time per serving directory: the version number, the champion
            # and the serving config change together.
            with fileio.exclusive_lock(serving_dir):
                version, path = push(staged, serving_dir, model_name)
                try:
                    registry_version = register(
                        tracking_uri, parent_run_id, model_name, version, path, meta
                    )
                    config_path = registry.pin_serving_version(serving_dir, model_name, version)
                except BaseException:
                    # A version the registry and the serving config do not know is not served.
                    fileio.remove_dir(path)
                    raise
        runs.log_params({"model_name": model_name, "serving_dir": serving_dir})
        import mlflow

        tags = {
            C.TAG_MODEL_VERSION: version,
            C.TAG_MODEL_PATH: path,
            C.TAG_REGISTRY_VERSION: registry_version,
        }
        mlflow.set_tags(tags)
        runs.set_pipeline_tags(parent_run_id, tags)
        boundary.progress(
            STEP,
            f"published {model_name} version {version} at {path}; registry "
            f"version {registry_version} is now champion; pinned in "
            f"{config_path}",
        )
    return path
