"""Deploy: validate the export in the serving runtime, then publish it as a new TF Serving version.

Versions live in `<serving_dir>/<model_name>/<version>/` (integers that only grow). Before
publishing, the export gets TF Serving warmup requests built from test rows and is loaded and
queried by the same code that serves it (kerasflow.serving); its answers must match the
evaluation's predictions.

Publishing commits in this order, so that the served version and the MLflow `champion` never
name a half-published version: upload the version (locally: copy under a hidden temporary name,
then rename; on an object store: file by file, then check every file's size), write a marker
holding the export's content digest last, register the version in MLflow, pin it in
`<serving_dir>/models.config` (the commit point that servers poll), and only then move the
`champion` alias. A failure before the pin leaves the old config; a failure after it restores
the old config. A retried deploy of the same export finds its digest in a marker and reuses that
version instead of publishing another. On object stores, where there is no lock, a version
number is claimed with a create-if-absent write under `<model>/.claims/`, so concurrent
publishers never share one.

With the setting `canary`, a model that already serves a version gets the new one beside it,
without the `stable` label and without the champion alias; `kerasflow canary` then compares the
two on real requests and promotes or rolls back.
"""

from __future__ import annotations

import contextlib
import json
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
from kerasflow.tracking import canary_config, lineage, registry, runs

STEP = "deploy"
VALIDATION_ROWS = 32
WARMUP_ROWS = 8
TOLERANCE = 1e-4

MARKER_FILE = ".kerasflow-published.json"
CLAIMS_DIR = ".claims"

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


def read_marker(version_dir: str) -> dict | None:
    """The publish marker of a version folder, or None when it has none (not fully published)."""
    path = fileio.join(version_dir, MARKER_FILE)
    try:
        return json.loads(fileio.read_bytes(path))
    except (FileNotFoundError, ValueError):
        return None


def is_complete(version_dir: str, marker: dict) -> bool:
    """True when every file the marker lists is in the version folder with its size."""
    found = fileio.list_files(version_dir)
    return all(found.get(name) == size for name, size in marker.get("files", {}).items())


def find_published(base: str, digest: str) -> int | None:
    """The newest complete version under `base` whose export has content digest `digest`."""
    for version in reversed(existing_versions(base)):
        marker = read_marker(fileio.join(base, str(version)))
        if (
            marker
            and marker.get("digest") == digest
            and is_complete(fileio.join(base, str(version)), marker)
        ):
            return version
    return None


def claim_version(base: str, digest: str) -> int:
    """A version number for a remote publish, claimed with a create-if-absent write.

    A claim left by an earlier attempt at the same export (one that failed mid-upload) is
    taken over, so a retry fills in its version instead of publishing the next one.
    """
    claims = fileio.join(base, CLAIMS_DIR)
    claimed = {int(n) for n in fileio.list_dir_names(claims) if n.isdigit()}
    for version in sorted(claimed, reverse=True):
        try:
            owner = fileio.read_bytes(fileio.join(claims, str(version))).decode()
        except FileNotFoundError:
            continue
        if owner == digest and read_marker(fileio.join(base, str(version))) is None:
            return version
    version = max([0, *claimed, *existing_versions(base)])
    for _ in range(20):
        version += 1
        if fileio.create_exclusive(fileio.join(claims, str(version)), digest.encode()):
            return version
    raise RuntimeError(f"could not claim a new version under {base}")


def upload_version(staged: Path, dest: str, marker: dict) -> None:
    """Uploads the export to a remote version folder, checks every file, then writes the marker.

    Raises:
        OSError: when a file is missing or has the wrong size after the upload.
    """
    fileio.upload_dir(staged, dest)
    found = fileio.list_files(dest)
    wrong = sorted(n for n, size in marker["files"].items() if found.get(n) != size)
    if wrong:
        raise OSError(f"upload to {dest} is incomplete: {', '.join(wrong[:5])}")
    fileio.write_bytes_atomic(fileio.join(dest, MARKER_FILE), json.dumps(marker).encode())


def push(saved_model_dir: Path, serving_dir: str, model_name: str) -> tuple[int, str]:
    """Publishes the export as a new version, or finds it already published; (version, path).

    The version folder gets a marker with the export's content digest and file sizes, written
    last; an earlier version with the same digest and every file in place is reused.
    """
    base = fileio.join(serving_dir, model_name)
    digest = fileio.dir_digest(saved_model_dir)
    reused = find_published(base, digest)
    if reused is not None:
        return reused, fileio.join(base, str(reused))
    marker = {"digest": digest, "files": fileio.list_files(str(saved_model_dir))}
    if fileio.is_remote(base):
        version = claim_version(base, digest)
        dest = fileio.join(base, str(version))
        try:
            upload_version(saved_model_dir, dest, marker)
        except BaseException:
            with contextlib.suppress(Exception):  # the claim stays, so a retry resumes it
                fileio.remove_dir(dest)
            raise
        return version, dest
    for _ in range(5):
        version = (existing_versions(base) or [0])[-1] + 1
        dest = fileio.join(base, str(version))
        try:
            fileio.copy_dir_atomic(
                saved_model_dir, dest, extra={MARKER_FILE: json.dumps(marker).encode()}
            )
            return version, dest
        except FileExistsError:
            continue  # another push took this number first
    raise RuntimeError(f"could not allocate a new version under {base}")


def register(
    tracking_uri: str, parent_run_id: str, model_name: str, version: int, path: str, meta: dict
) -> int:
    """Registers the pushed version in MLflow (once per serving version); returns its number."""
    import mlflow

    existing = registry.find_serving_version(tracking_uri, model_name, version, path)
    if existing is not None:
        return existing  # a retried deploy: the earlier attempt registered it already
    parent = mlflow.MlflowClient().get_run(parent_run_id)
    train_run = runs.find_step_run(parent_run_id, "train")
    source = path
    if train_run:
        # The train step's LoggedModel (MLflow's Keras flavor); runs of older releases logged
        # the model as plain run artifacts.
        tags = mlflow.MlflowClient().get_run(train_run).data.tags
        source = tags.get(C.TAG_LOGGED_MODEL_URI) or f"runs:/{train_run}/model"
    return registry.register_version(
        tracking_uri,
        model_name,
        source,
        train_run or parent_run_id,
        {
            C.TAG_KFP_RUN_ID: parent.data.tags.get(C.TAG_KFP_RUN_ID, ""),
            "kerasflow.mlflow_run_id": parent_run_id,
            lineage.TAG_DATA_HASH: meta.get(C.META_DATA_HASH, ""),
            registry.SERVING_VERSION_TAG: version,
            registry.SERVING_PATH_TAG: path,
        },
    )


def commit(
    tracking_uri: str, serving_dir: str, model_name: str, version: int, registry_version: int
) -> str:
    """Pins `version` in the serving config, then makes `registry_version` the champion.

    Returns the config's path. When moving the alias fails, the previous config is put back,
    so the served version and the champion still agree.
    """
    previous = registry.read_serving_config(serving_dir)
    config_path = registry.pin_serving_version(serving_dir, model_name, version)
    try:
        registry.promote(tracking_uri, model_name, registry_version)
    except BaseException:
        registry.restore_serving_config(serving_dir, previous)
        raise
    return config_path


def publish(
    staged: Path,
    serving_dir: str,
    model_name: str,
    tracking_uri: str,
    parent_run_id: str,
    meta: dict,
    *,
    canary: bool = False,
) -> tuple[int, str, int, str]:
    """Publishes, registers, pins and promotes; returns (version, path, registry version, config).

    A complete version that a failure left unpinned is not served; it keeps its marker, so a
    retry reuses it rather than publishing another. With `canary`, a model that already serves
    a version gets the new one beside it (kerasflow.tracking.canary_config) and the champion
    alias stays where it is until `kerasflow canary` promotes it.
    """
    # One publisher at a time per local serving directory: the version number, the champion
    # and the serving config change together.
    with fileio.exclusive_lock(serving_dir):
        version, path = push(staged, serving_dir, model_name)
        registry_version = register(tracking_uri, parent_run_id, model_name, version, path, meta)
        staged_config = canary_config.stage(serving_dir, model_name, version) if canary else None
        if staged_config is not None:
            return version, path, registry_version, staged_config
        config_path = commit(tracking_uri, serving_dir, model_name, version, registry_version)
    return version, path, registry_version, config_path


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
        raise UserError(
            "serving_dir is empty: pass the TF Serving base directory (local, gs://, s3://)"
        )
    tracking_uri = runs.resolve_uri(tracking_uri)
    with runs.step_run(tracking_uri, parent_run_id, STEP, settings=opts):
        meta = artifacts.load_meta(splits_dir)
        test = artifacts.load_part(splits_dir, "test")
        expected = np.load(Path(predictions_dir, C.PREDICTIONS_FILE))["outputs"]
        with tempfile.TemporaryDirectory(prefix="kerasflow-deploy-") as tmp:
            staged = stage_export(
                Path(model_dir, C.SAVED_MODEL_DIR), model_name, meta, test, Path(tmp)
            )
            validate_export(staged, meta, test, expected)
            boundary.progress(STEP, "infra validation passed (loaded, warmed up, answers match)")
            version, path, registry_version, config_path = publish(
                staged, serving_dir, model_name, tracking_uri, parent_run_id, meta,
                canary=opts.canary,
            )  # fmt: skip
        runs.log_params({"model_name": model_name, "serving_dir": serving_dir})
        import mlflow

        tags = {
            C.TAG_MODEL_VERSION: version,
            C.TAG_MODEL_PATH: path,
            C.TAG_REGISTRY_VERSION: registry_version,
        }
        mlflow.set_tags(tags)
        runs.set_pipeline_tags(parent_run_id, tags)
        on_trial = opts.canary and canary_config.read(serving_dir, model_name).canary == version
        role = (
            "is the canary beside `stable` (kerasflow canary promotes or rolls it back)"
            if on_trial
            else "is now champion"
        )
        boundary.progress(
            STEP,
            f"published {model_name} version {version} at {path}; registry "
            f"version {registry_version} {role}; pinned in {config_path}",
        )
    return path
