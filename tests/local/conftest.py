"""The local tier's harness: one component at a time, as a real KFP task under kfp.local.

kfp.local does not take artifacts as inputs of a bare component call, so each call is wrapped
in a one-task pipeline whose input artifacts come from `dsl.importer`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


@dataclass
class TaskResult:
    """What one component run left: output artifact paths, their metadata, parameters."""

    paths: dict[str, Path]
    metadata: dict[str, dict]
    parameters: dict[str, Any]


class ComponentRunner:
    """Runs single components under kfp.local's SubprocessRunner."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._ids = itertools.count()

    def __call__(
        self, component: Any, artifacts: dict[str, tuple[str, Any]] | None = None, **params: Any
    ) -> TaskResult:
        from kfp import dsl, local

        artifacts = artifacts or {}
        root = self.root / f"call-{next(self._ids)}"
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(root),
            raise_on_error=True,
        )

        @dsl.pipeline(name="component-harness")
        def harness():
            kwargs = dict(params)
            for name, (uri, cls) in artifacts.items():
                kwargs[name] = dsl.importer(artifact_uri=uri, artifact_class=cls).output
            component(**kwargs)

        harness()
        (run_dir,) = list(root.iterdir())
        task_dir = run_dir / component.name.replace("_", "-")
        output = json.loads((task_dir / "executor_output.json").read_text())
        paths, metadata = {}, {}
        for name, spec in output.get("artifacts", {}).items():
            art = spec["artifacts"][0]
            paths[name] = Path(art["uri"])
            metadata[name] = art.get("metadata", {})
        return TaskResult(paths, metadata, output.get("parameterValues", {}))


@pytest.fixture(scope="package")
def run_component(tmp_path_factory) -> ComponentRunner:
    """Runs one component as a KFP task; returns its outputs."""
    return ComponentRunner(tmp_path_factory.mktemp("kfp_local"))
