"""Which models to serve: TF Serving's ModelServerConfig, read into plain dataclasses.

A config comes either from `--model_name/--model_base_path` or from a `--model_config_file` in
TF Serving's text-protobuf format, so the same file drives our server and the official one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType

from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import is_remote, read_bytes

LATEST = "latest"
ALL = "all"
SPECIFIC = "specific"
PLATFORM = "tensorflow"


@dataclasses.dataclass(frozen=True)
class VersionPolicy:
    """Which of the versions found on disk are served (TF Serving's ServableVersionPolicy)."""

    kind: str = LATEST
    num_versions: int = 1
    versions: tuple[int, ...] = ()

    def select(self, on_disk: Iterable[int]) -> set[int]:
        """The versions among `on_disk` this policy wants loaded."""
        found = sorted(set(on_disk))
        if self.kind == ALL:
            return set(found)
        if self.kind == SPECIFIC:
            return set(found) & set(self.versions)
        return set(found[-self.num_versions :]) if self.num_versions > 0 else set()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """One served model: its name, where its versions live, its policy and labels."""

    name: str
    base_path: str
    policy: VersionPolicy = VersionPolicy()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name:
            raise UserError("a served model needs a name")
        if not self.base_path:
            raise UserError(f"model {self.name!r} needs a base_path")
        base = self.base_path
        if not is_remote(base):
            base = str(Path(base).absolute())
        object.__setattr__(self, "base_path", base)
        object.__setattr__(self, "labels", MappingProxyType(dict(self.labels)))

    def __hash__(self):
        return hash((self.name, self.base_path, self.policy, tuple(sorted(self.labels.items()))))


def _policy_from_proto(name: str, proto) -> VersionPolicy:
    which = proto.WhichOneof("policy_choice")
    if which is None or which == LATEST:
        num = proto.latest.num_versions if which else 0
        if num < 0:
            raise UserError(f"model {name!r}: latest.num_versions must be positive, got {num}")
        return VersionPolicy(LATEST, num_versions=num or 1)
    if which == ALL:
        return VersionPolicy(ALL)
    versions = tuple(sorted(set(proto.specific.versions)))
    if not versions:
        raise UserError(f"model {name!r}: version policy 'specific' lists no versions")
    return VersionPolicy(SPECIFIC, versions=versions)


def configs_from_proto(server_config) -> list[ModelConfig]:
    """Converts a tensorflow.serving.ModelServerConfig message into ModelConfig objects.

    Raises:
        UserError: for configs this server cannot serve (custom configs, other platforms,
            duplicate names, bad policies).
    """
    if server_config.WhichOneof("config") == "custom_model_config":
        raise UserError("custom_model_config is not supported; use model_config_list")
    configs: list[ModelConfig] = []
    seen: set[str] = set()
    for entry in server_config.model_config_list.config:
        if entry.name in seen:
            raise UserError(f"model {entry.name!r} is configured twice")
        seen.add(entry.name)
        if entry.model_platform not in ("", PLATFORM):
            raise UserError(
                f"model {entry.name!r}: model_platform {entry.model_platform!r} is not supported "
                f"(only {PLATFORM!r})"
            )
        configs.append(
            ModelConfig(
                name=entry.name,
                base_path=entry.base_path,
                policy=_policy_from_proto(entry.name, entry.model_version_policy),
                labels=dict(entry.version_labels),
            )
        )
    return configs


def parse_model_config_text(text: str, source: str = "model config") -> list[ModelConfig]:
    """Parses a ModelServerConfig in protobuf text format.

    Args:
        text: the file's content.
        source: where it came from, for error messages.

    Raises:
        UserError: when the text does not parse or describes an unservable config.
    """
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise UserError(f"bad model config in {source}: {exc}") from None
    # An empty model_config_list is valid, as for TF Serving: a server can start before the
    # first model is deployed and pick it up when the config names it.
    return configs_from_proto(message)


def load_model_config_file(path: str) -> list[ModelConfig]:
    """Reads and parses a `--model_config_file` (a local path or an object-store URI).

    Raises:
        UserError: when the file is missing or invalid.
    """
    return parse_model_config_text(read_flag_file(path, "--model_config_file"), source=path)


def read_flag_file(path: str, flag: str) -> str:
    """The text of the file a server flag names (a local path or an object-store URI).

    Raises:
        UserError: naming the flag and the path when the file cannot be read.
    """
    try:
        return read_bytes(path).decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"cannot read {flag} {path}: no such file") from None
    except OSError as exc:
        raise UserError(f"cannot read {flag} {path}: {exc.strerror}") from None
    except UserError as exc:
        raise UserError(f"cannot read {flag} {path}: {exc}") from None
