"""Compiling the pipeline to KFP IR YAML, for the user's image and cluster settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kerasflow.settings import DEFAULT_IMAGE


def compile_pipeline(
    output: str | Path, *, pipeline: Any = None, image: str = "", step_settings: Any = None
) -> Path:
    """Compiles a pipeline (the training pipeline unless given) to KFP IR YAML at `output`.

    Args:
        output: where to write the YAML (written atomically; folders are created).
        pipeline: a `@dsl.pipeline` function; None builds the training pipeline for
            `step_settings`.
        image: the component image (`REGISTRY/kerasflow:TAG`); the default image when empty.
        step_settings: optional cluster settings applied to every task.
    """
    from kfp import compiler

    from kerasflow.pipelines.dag import build_pipeline
    from kerasflow.runtime.fileio import write_bytes_atomic

    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.compiling.yaml")
    compiler.Compiler().compile(pipeline or build_pipeline(step_settings), str(tmp))
    docs = list(yaml.safe_load_all(tmp.read_text()))
    tmp.unlink()
    if image:
        set_image(docs[0], image)
    root = getattr(step_settings, "pipeline_root", "")
    if root:
        docs[0]["defaultPipelineRoot"] = root
    text = yaml.safe_dump_all(docs, sort_keys=True, default_flow_style=False)
    write_bytes_atomic(output, text.encode())
    return output


def set_image(spec: dict, image: str) -> None:
    """Points every executor that runs the default image at `image` instead.

    Components fix their base image when they are defined (import time); the image for a given
    registry is chosen when compiling, so it is swapped in the compiled spec.
    """
    for executor in spec["deploymentSpec"]["executors"].values():
        container = executor.get("container", {})
        if container.get("image") == DEFAULT_IMAGE:
            container["image"] = image
