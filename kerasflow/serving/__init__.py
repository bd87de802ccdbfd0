"""The serving runtime: a model server that speaks TensorFlow Serving's REST and gRPC APIs.

Public entry points (imported lazily, so `import kerasflow.serving` does not load TensorFlow):

- `ModelServer`, `ServerOptions`, `ModelConfig`, `VersionPolicy`, `BatchingOptions`: run a
  server in-process or from `kerasflow serve` (see kerasflow.serving.server).
- `validate_export`, `write_warmup_requests`, `InfraValidationError`: infra validation and
  warmup files for the deploy step (see kerasflow.serving.validation).
- `parse_model_config_text`, `load_model_config_file`: TF Serving model config files.
- kerasflow.serving.commands.register: the `serve` and `predict` CLI subcommands.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ModelServer": "kerasflow.serving.server",
    "ServerOptions": "kerasflow.serving.server",
    "ModelConfig": "kerasflow.serving.config",
    "VersionPolicy": "kerasflow.serving.config",
    "parse_model_config_text": "kerasflow.serving.config",
    "load_model_config_file": "kerasflow.serving.config",
    "BatchingOptions": "kerasflow.serving.batching",
    "validate_export": "kerasflow.serving.validation",
    "write_warmup_requests": "kerasflow.serving.validation",
    "InfraValidationError": "kerasflow.serving.errors",
    "ServingError": "kerasflow.serving.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kerasflow.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
