"""The MLflow model registry side of a deployment, and the serving config that pins a version.

Every pushed version is registered under the served model's name with tags linking the KFP run,
the MLflow run, the training data and the serving version. The `champion` alias marks the
version that serves; its history is kept on the registered model so a rollback knows where to go
back to. `<serving_dir>/models.config` (TF Serving's ModelServerConfig text format) pins the
champion's serving version, for `kerasflow serve --model_config_file` and the official server.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kerasflow.runtime import fileio
from kerasflow.runtime.errors import UserError

CHAMPION = "champion"
HISTORY_TAG = "kerasflow.champion_history"
SERVING_VERSION_TAG = "kerasflow.serving_version"
SERVING_PATH_TAG = "kerasflow.serving_path"
CONFIG_FILE = "models.config"


@dataclass
class Champion:
    """The version the `champion` alias points at."""

    registry_version: int
    serving_version: int | None
    source: str
    run_id: str = ""

    def describe(self, model_name: str) -> str:
        """Names the champion for messages: registry version, serving version and source."""
        serving = f", serving version {self.serving_version}" if self.serving_version else ""
        return f"champion v{self.registry_version} of '{model_name}' ({self.source}{serving})"


def _client(tracking_uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=tracking_uri)


class RegistryUnavailable(UserError):
    """The registry could not say who the champion is (unreachable, refused, broken)."""


class ChampionUnavailable(UserError):
    """The registry names a champion whose model cannot be downloaded or loaded."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _no_champion(exc: Exception) -> bool:
    # No registered model of that name, or one without the alias: there is no champion yet.
    code = getattr(exc, "error_code", "")
    text = str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
    )


def get_champion(tracking_uri: str, model_name: str) -> Champion | None:
    """The current champion of `model_name`, or None when there is none yet.

    Raises:
        RegistryUnavailable: when the registry fails to answer, so that no caller can take an
            error for "no champion".
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        mv = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException as exc:
        if _no_champion(exc):
            return None
        raise RegistryUnavailable(
            f"cannot read the champion of '{model_name}' from the MLflow registry at "
            f"{tracking_uri}: {_first_line(exc)}"
        ) from None
    serving = mv.tags.get(SERVING_VERSION_TAG)
    return Champion(int(mv.version), int(serving) if serving else None, mv.source, mv.run_id or "")


def download_champion(tracking_uri: str, model_name: str) -> tuple[Champion, Path] | None:
    """The current champion and a local copy of its registered artifacts; None when there is none.

    The one way every consumer (the gate, warm start) finds the model the `champion` alias
    points at, so that a rollback moves all of them.

    Raises:
        RegistryUnavailable: when the registry fails to answer.
        ChampionUnavailable: when the champion exists but its artifacts cannot be downloaded.
    """
    import mlflow

    champion = get_champion(tracking_uri, model_name)
    if champion is None:
        return None
    try:
        if champion.source.startswith(LOGGED_MODEL_PREFIX):
            return champion, _download_logged_champion(tracking_uri, model_name, champion)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=champion.source, tracking_uri=tracking_uri
        )
    except Exception as exc:
        raise ChampionUnavailable(
            f"{champion.describe(model_name)}: its artifacts cannot be downloaded: "
            f"{_first_line(exc)}"
        ) from None
    return champion, Path(local)


# Registered versions created from a LoggedModel (MLflow's Keras flavor) have this source.
LOGGED_MODEL_PREFIX = "models:/m-"


def _download_logged_champion(tracking_uri: str, model_name: str, champion: Champion) -> Path:
    """The champion's Keras model (from its LoggedModel, through the registry's own URI) and
    the SavedModel its train run exported, laid out as `model.keras` and `saved_model/`."""
    import shutil
    import tempfile

    import mlflow

    local = Path(tempfile.mkdtemp(prefix="kerasflow-champion-"))
    flavor = mlflow.artifacts.download_artifacts(
        artifact_uri=f"models:/{model_name}/{champion.registry_version}",
        dst_path=str(local / "logged_model"),
        tracking_uri=tracking_uri,
    )
    shutil.move(str(Path(flavor, "data", "model.keras")), local / "model.keras")
    if champion.run_id:
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{champion.run_id}/model/saved_model",
            dst_path=str(local),
            tracking_uri=tracking_uri,
        )
    return local


def register_version(
    tracking_uri: str, model_name: str, source: str, run_id: str, tags: dict[str, Any]
) -> int:
    """Registers `source` (a LoggedModel's models:/ URI, a runs:/ or a file URI of the model) and
    returns the registry version."""
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, description="Served by kerasflow.")
    # A tracking server refuses a LoggedModel source without the model's id.
    model_id = source[len("models:/") :] if source.startswith(LOGGED_MODEL_PREFIX) else None
    mv = client.create_model_version(
        model_name,
        source,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        model_id=model_id,
    )
    return int(mv.version)


def champion_history(tracking_uri: str, model_name: str) -> list[int]:
    """Registry versions that were champion, oldest first."""
    model = _client(tracking_uri).get_registered_model(model_name)
    return json.loads(model.tags.get(HISTORY_TAG, "[]"))


def promote(tracking_uri: str, model_name: str, registry_version: int) -> None:
    """Points the `champion` alias at `registry_version` and appends it to the history.

    A retried promotion of the version that is already last in the history adds nothing.
    """
    client = _client(tracking_uri)
    history = champion_history(tracking_uri, model_name)
    client.set_registered_model_alias(model_name, CHAMPION, str(registry_version))
    if not history or history[-1] != registry_version:
        client.set_registered_model_tag(
            model_name, HISTORY_TAG, json.dumps([*history, registry_version])
        )


def find_serving_version(
    tracking_uri: str, model_name: str, serving_version: int, path: str
) -> int | None:
    """The registry version already registered for serving version `serving_version` at `path`."""
    from mlflow.exceptions import MlflowException

    try:
        versions = _client(tracking_uri).search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    for mv in versions:
        tags = mv.tags or {}
        if tags.get(SERVING_VERSION_TAG) == str(serving_version) and (
            tags.get(SERVING_PATH_TAG) == path
        ):
            return int(mv.version)
    return None


def rollback(
    tracking_uri: str, model_name: str, to_version: int | None = None, serving_dir: str = ""
) -> Champion:
    """Moves the champion back: to the previous champion, or to registry version `to_version`.

    With `serving_dir`, the target's serving version is pinned in `<serving_dir>/models.config`
    first and the alias moves after it (as a deploy commits); when the alias cannot move, the
    previous config is put back.

    Raises:
        UserError: unknown model, nothing to roll back to, an unknown version, or (with
            `serving_dir`) a version that was never published for serving.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        history = champion_history(tracking_uri, model_name)
    except MlflowException:
        raise UserError(f"no registered model named '{model_name}'") from None
    current = get_champion(tracking_uri, model_name)
    if to_version is None:
        earlier = [v for v in history if current is None or v != current.registry_version]
        if not earlier:
            raise UserError(f"model '{model_name}' has no earlier champion to roll back to")
        to_version = earlier[-1]
        history = history[: len(history) - 1 - history[::-1].index(to_version)]
    try:
        target = client.get_model_version(model_name, str(to_version))
    except MlflowException:
        raise UserError(f"model '{model_name}' has no version {to_version}") from None
    previous = None
    if serving_dir:
        serving = (target.tags or {}).get(SERVING_VERSION_TAG)
        if not serving:
            raise UserError(
                f"registry version {to_version} of '{model_name}' was never published for serving"
            )
        previous = read_serving_config(serving_dir)
        pin_serving_version(serving_dir, model_name, int(serving))
    try:
        client.set_registered_model_alias(model_name, CHAMPION, str(to_version))
        client.set_registered_model_tag(
            model_name,
            HISTORY_TAG,
            json.dumps(
                [*history, to_version] if not history or history[-1] != to_version else history
            ),
        )
    except BaseException:
        if serving_dir:
            restore_serving_config(serving_dir, previous)
        raise
    champion = get_champion(tracking_uri, model_name)
    assert champion is not None
    return champion


def registry_version_for(tracking_uri: str, model_name: str, serving_version: int) -> int:
    """The registry version that was published as serving version `serving_version`.

    Raises:
        UserError: when no registered version of the model carries that serving version.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        versions = []
    for mv in versions:
        if mv.tags.get(SERVING_VERSION_TAG) == str(serving_version):
            return int(mv.version)
    raise UserError(f"model '{model_name}' has no registered serving version {serving_version}")


def read_serving_config(serving_dir: str) -> bytes | None:
    """The bytes of `<serving_dir>/models.config`, or None when there is none."""
    try:
        return fileio.read_bytes(fileio.join(serving_dir, CONFIG_FILE))
    except FileNotFoundError:
        return None


def restore_serving_config(serving_dir: str, content: bytes | None) -> None:
    """Puts back a serving config read by `read_serving_config` (None: there was none)."""
    path = fileio.join(serving_dir, CONFIG_FILE)
    if content is None:
        fileio.remove(path)
    else:
        fileio.write_bytes_atomic(path, content)


def pin_serving_version(serving_dir: str, model_name: str, version: int) -> str:
    """Writes `<serving_dir>/models.config` so `model_name` serves exactly `version`.

    Other models in the file are kept; the model's version labels are dropped. The file is
    replaced atomically (a rename locally, a single-object PUT on an object store).
    """
    # No version label: TF Serving refuses a config that moves an existing label to a version
    # it has not loaded yet (ServerCore::UpdateModelVersionLabelMap runs before the load, even
    # with --allow_version_labels_for_unavailable_models), so a `stable` label moved here would
    # keep every later version from loading. The pinned version is the only one served.
    return write_served_versions(serving_dir, model_name, [version], {})


def served_versions(serving_dir: str, model_name: str) -> tuple[list[int], dict[str, int]]:
    """The versions `<serving_dir>/models.config` pins for `model_name` and its labels
    (([], {}) when the file or the model's entry is absent)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    current = read_serving_config(serving_dir)
    if current is None:
        return [], {}
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(current.decode("utf-8"), config)
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            policy = entry.model_version_policy
            versions = (
                sorted(policy.specific.versions)
                if policy.WhichOneof("policy_choice") == "specific"
                else []
            )
            return versions, dict(entry.version_labels)
    return [], {}


def write_served_versions(
    serving_dir: str, model_name: str, versions: list[int], labels: dict[str, int]
) -> str:
    """Writes `<serving_dir>/models.config` so `model_name` serves `versions` with `labels`.

    Other models in the file are kept. The file is replaced atomically (a rename locally, a
    single-object PUT on an object store). Returns its path.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = fileio.join(serving_dir, CONFIG_FILE)
    config = model_server_config_pb2.ModelServerConfig()
    current = read_serving_config(serving_dir)
    if current is not None:
        text_format.Parse(current.decode("utf-8"), config)
    entries = config.model_config_list.config
    entry = next((c for c in entries if c.name == model_name), None)
    if entry is None:
        entry = entries.add()
        entry.name = model_name
    entry.base_path = fileio.join(serving_dir, model_name)
    entry.model_platform = "tensorflow"
    entry.model_version_policy.Clear()
    entry.model_version_policy.specific.versions.extend(sorted(set(versions)))
    entry.version_labels.clear()
    for label, version in sorted(labels.items()):
        entry.version_labels[label] = version
    fileio.write_bytes_atomic(path, text_format.MessageToString(config).encode())
    return path
