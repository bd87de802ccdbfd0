"""The model repository: which versions are loaded, their states, and the filesystem poll.

Each poll lists every model's base path, asks the version policy which versions it wants, loads
the missing ones (and warms them up) and only then unloads the versions no longer wanted, so a
new version takes traffic before the old one leaves. A version that fails to load is recorded in
state END with its error, is not retried while it stays on disk, and never takes down what is
serving. A failed version is tried again when its files change (a copy that was still going on,
or a fix). On an object store, where a version cannot appear atomically, a version that shows up
while the server runs is loaded once its listing is the same on two polls in a row. Requests read an
immutable dict of available versions, so they never wait on a load.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable

from kerasflow.runtime import fileio
from kerasflow.serving.batching import BatchingOptions
from kerasflow.serving.config import ModelConfig
from kerasflow.serving.errors import Code, ServingError, not_found
from kerasflow.serving.servable import Servable, load_servable

log = logging.getLogger(__name__)

START = "START"
LOADING = "LOADING"
AVAILABLE = "AVAILABLE"
UNLOADING = "UNLOADING"
END = "END"

# Version folders are plain non-negative integers; anything else (".1.tmp-x", "tmp") is ignored.
_VERSION_NAME = re.compile(r"[0-9]{1,18}")

Loader = Callable[..., Servable]


@dataclasses.dataclass(frozen=True)
class VersionStatus:
    """One version's state, as GetModelStatus reports it."""

    version: int
    state: str
    error_code: Code = Code.OK
    error_message: str = ""


class _Model:
    def __init__(self, config: ModelConfig):
        self.config = config
        # Replaced as a whole on every change, so readers need no lock.
        self.available: dict[int, Servable] = {}
        self.states: dict[int, VersionStatus] = {}
        # Failed versions and object-store versions still settling, with their files' fingerprint.
        self.failed: dict[int, tuple] = {}
        self.settling: dict[int, tuple] = {}
        self.listed = False


def folder_fingerprint(path: str) -> tuple:
    """Names, sizes and modification stamps of the files under a local folder or remote prefix."""
    try:
        if fileio.is_remote(path):
            fs, key = fileio.filesystem(path)
            found = fs.find(key.rstrip("/"), detail=True)
            # Sizes plus the store's version stamp (GCS generation, S3 ETag) of each object.
            return tuple(
                sorted(
                    (name, info.get("size"), str(info.get("generation") or info.get("ETag")))
                    for name, info in found.items()
                )
            )
        entries = []
        for root, _, files in os.walk(path):
            for name in files:
                stat = os.stat(os.path.join(root, name))
                entries.append((os.path.join(root, name), stat.st_size, stat.st_mtime_ns))
        return tuple(sorted(entries))
    except Exception as exc:
        return (("unreadable", str(exc)),)


def version_numbers(names: Iterable[str]) -> set[int]:
    """The version numbers among folder names, ignoring hidden and non-integer names."""
    return {int(n) for n in names if _VERSION_NAME.fullmatch(n)}


class ModelManager:
    """Loads, serves and unloads model versions according to their configs.

    Args:
        configs: the models to serve.
        poll_seconds: seconds between filesystem polls; <= 0 loads once at start only.
        batching: batching options given to every loaded signature.
        loader: loads one version (tests pass a fake); defaults to load_servable.
    """

    def __init__(
        self,
        configs: Iterable[ModelConfig],
        poll_seconds: float = 1.0,
        batching: BatchingOptions | None = None,
        loader: Loader | None = None,
    ):
        self._configs = list(configs)
        self._poll_seconds = poll_seconds
        self._batching = batching
        self._loader = loader or load_servable
        self._models: dict[str, _Model] = {}
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # Lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Loads the configured models once, then polls in a background thread."""
        self.apply_configs(self._configs)
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll, name="model-poll", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version (queued requests finish first)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for model in self._models.values():
                for version in list(model.available):
                    self._unload(model, version)

    def _poll(self) -> None:
        while not self._stopping.wait(self._poll_seconds):
            try:
                self.reconcile()
            except Exception:
                log.exception("model poll failed; retrying at the next poll")

    # Configuration ---------------------------------------------------------------------------

    def apply_configs(self, configs: Iterable[ModelConfig]) -> None:
        """Serves exactly `configs` from now on: adds, updates and removes models, then loads."""
        configs = list(configs)
        with self._lock:
            old = self._models
            new: dict[str, _Model] = {}
            for config in configs:
                model = old.get(config.name)
                if model is not None and model.config.base_path == config.base_path:
                    model.config = config
                else:
                    model = _Model(config)
                new[config.name] = model
            retired = [m for name, m in old.items() if new.get(name) is not m]
            self._models = new
            self._configs = configs
            for model in retired:
                for version in list(model.available):
                    self._unload(model, version)
            self.reconcile()

    @property
    def configs(self) -> list[ModelConfig]:
        """The configs served now."""
        return list(self._configs)

    def model_names(self) -> list[str]:
        """The configured model names."""
        return sorted(self._models)

    # Polling -------------------------------------------------------------------------------

    def reconcile(self) -> None:
        """One poll: brings every model's loaded versions in line with its policy."""
        with self._lock:
            for model in list(self._models.values()):
                if self._stopping.is_set():
                    return
                self._reconcile_model(model)

    def _reconcile_model(self, model: _Model) -> None:
        config = model.config
        try:
            on_disk = version_numbers(fileio.list_dir_names(config.base_path))
        except Exception as exc:
            log.warning("model %s: cannot list %s: %s", config.name, config.base_path, exc)
            return
        if not on_disk and not model.available:
            log.debug("model %s: no versions under %s", config.name, config.base_path)
        aspired = config.policy.select(on_disk)
        first_listing, model.listed = not model.listed, True
        for version in list(model.failed):
            path = fileio.join(config.base_path, str(version))
            if version not in aspired or folder_fingerprint(path) != model.failed[version]:
                del model.failed[version]
        for version in sorted(aspired - set(model.available) - set(model.failed), reverse=True):
            if self._stopping.is_set():
                return
            path = fileio.join(config.base_path, str(version))
            if fileio.is_remote(path) and not first_listing:
                fingerprint = folder_fingerprint(path)
                if model.settling.get(version) != fingerprint:
                    model.settling[version] = fingerprint
                    continue
            model.settling.pop(version, None)
            self._load(model, version)
        # Unload old versions only once a wanted one serves, so traffic always has a version.
        if aspired & set(model.available):
            for version in sorted(set(model.available) - aspired):
                self._unload(model, version)

    def _load(self, model: _Model, version: int) -> None:
        name = model.config.name
        path = fileio.join(model.config.base_path, str(version))
        model.states[version] = VersionStatus(version, LOADING)
        log.info("model %s: loading version %d from %s", name, version, path)
        try:
            servable = self._load_path(path, name, version)
        except ServingError as exc:
            self._record_failure(model, version, exc.code, exc.message)
            return
        except Exception as exc:
            self._record_failure(model, version, Code.UNKNOWN, f"{type(exc).__name__}: {exc}")
            return
        model.available = {**model.available, version: servable}
        model.states[version] = VersionStatus(version, AVAILABLE)
        log.info("model %s: version %d is available", name, version)

    def _load_path(self, path: str, name: str, version: int) -> Servable:
        if not fileio.is_remote(path):
            return self._loader(path, name, version, batching=self._batching)
        with fileio.local_copy(path) as local:
            servable = self._loader(str(local), name, version, batching=self._batching)
        servable.path = path
        return servable

    def _record_failure(self, model: _Model, version: int, code: Code, message: str) -> None:
        path = fileio.join(model.config.base_path, str(version))
        model.failed[version] = folder_fingerprint(path)
        model.states[version] = VersionStatus(version, END, code, message)
        log.error("model %s: version %d failed to load: %s", model.config.name, version, message)

    def _unload(self, model: _Model, version: int) -> None:
        servable = model.available[version]
        model.states[version] = VersionStatus(version, UNLOADING)
        model.available = {v: s for v, s in model.available.items() if v != version}
        servable.close()
        model.states[version] = VersionStatus(version, END)
        log.info("model %s: version %d unloaded", model.config.name, version)

    # Lookups -------------------------------------------------------------------------------

    def _label_version(self, model: _Model | None, name: str, label: str) -> int:
        labels = model.config.labels if model is not None else {}
        if label not in labels:
            raise not_found(f"Unrecognized servable version label: {label}")
        return labels[label]

    def get_servable(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> Servable:
        """The servable answering a request for `name` (latest, a version, or a label).

        Raises:
            ServingError: NOT_FOUND when no such model, version or label is available.
        """
        model = self._models.get(name)
        if label is not None:
            version = self._label_version(model, name, label)
        available = model.available if model is not None else {}
        if version is None:
            if not available:
                raise not_found(f"Servable not found for request: Latest({name})")
            return available[max(available)]
        servable = available.get(version)
        if servable is None:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return servable

    def model_status(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[VersionStatus]:
        """Version states of a model, newest first (one entry when a version or label is given).

        Raises:
            ServingError: NOT_FOUND for an unknown model, version or label.
        """
        model = self._models.get(name)
        if model is None or not model.states:
            raise not_found(f"Could not find any versions of model {name}")
        if label is not None:
            version = self._label_version(model, name, label)
        states = dict(model.states)
        if version is not None:
            if version not in states:
                raise not_found(f"Could not find version {version} of model {name}")
            return [states[version]]
        return [states[v] for v in sorted(states, reverse=True)]
