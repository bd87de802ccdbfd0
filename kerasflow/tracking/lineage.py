"""What a pipeline run records so that a served model can be traced back and rerun.

Once per pipeline run: the code that ran (kerasflow's version, the git commit of a checkout or
the one baked into the component image, the image itself when known) as tags of the pipeline's
MLflow run; the data's source, content digest and schema (ingest); and every step's settings
as a JSON artifact `settings/<step>.json` of the pipeline run, from which `kerasflow reproduce`
rebuilds the run's exact settings.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from pathlib import Path
from typing import Any

TAG_CODE_VERSION = "kerasflow.code_version"
TAG_GIT_COMMIT = "kerasflow.git_commit"
TAG_IMAGE = "kerasflow.image"
TAG_DATA_SOURCE = "kerasflow.data_source"
TAG_DATA_HASH = "kerasflow.data_hash"
TAG_SCHEMA_URI = "kerasflow.schema_uri"
# A reproduction names the run it reproduces.
TAG_REPRODUCES = "kerasflow.reproduces"
SETTINGS_FOLDER = "settings"

# Set in the component image at build time (docker/build.sh) and by `kerasflow run --runner
# docker` (the image it runs); a checkout's commit is read from git instead.
GIT_COMMIT_ENV = "KERASFLOW_GIT_COMMIT"
IMAGE_ENV = "KERASFLOW_IMAGE"


@functools.cache
def _checkout_commit() -> str:
    """The commit of the git checkout kerasflow runs from ('' when installed; '+dirty' when
    the checkout has changes)."""
    here = Path(__file__).resolve().parents[2]
    if not (here / ".git").exists():
        return ""
    try:
        head = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+dirty" if head and dirty else head


def code_version() -> dict[str, str]:
    """Tags naming the code that runs: package version, git commit, image (those known)."""
    from kerasflow import __version__

    tags = {TAG_CODE_VERSION: __version__}
    baked = os.environ.get(GIT_COMMIT_ENV, "")
    commit = baked if baked not in ("", "unknown") else _checkout_commit()
    if commit:
        tags[TAG_GIT_COMMIT] = commit
    if os.environ.get(IMAGE_ENV):
        tags[TAG_IMAGE] = os.environ[IMAGE_ENV]
    return tags


def settings_artifact(step: str) -> str:
    """The artifact path of a step's settings on the pipeline run."""
    return f"{SETTINGS_FOLDER}/{step}.json"


def record_step_settings(client: Any, pipeline_run_id: str, step: str, settings: Any) -> None:
    """Logs a step's validated settings as `settings/<step>.json` of the pipeline run."""
    values = settings.model_dump(mode="json") if hasattr(settings, "model_dump") else settings
    client.log_dict(pipeline_run_id, values, settings_artifact(step))


def read_step_settings(tracking_uri: str, pipeline_run_id: str) -> dict[str, dict]:
    """Step name -> the settings the run recorded for it (steps that recorded none are absent)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    out: dict[str, dict] = {}
    try:
        listed = client.list_artifacts(pipeline_run_id, SETTINGS_FOLDER)
    except Exception:  # noqa: BLE001 - a run of an older release has no such folder
        return out
    for item in listed:
        name = item.path.rsplit("/", 1)[-1]
        if item.is_dir or not name.endswith(".json"):
            continue
        text = _load_text(tracking_uri, pipeline_run_id, item.path)
        out[name[: -len(".json")]] = json.loads(text)
    return out


def _load_text(tracking_uri: str, run_id: str, path: str) -> str:
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=path, tracking_uri=tracking_uri
    )
    return Path(local).read_text(encoding="utf-8")
