"""The final fit on several machines: a Kubeflow TFJob created through the Kubernetes API.

Each of the job's workers runs `python -m kerasflow.modeling.distribute` on the artifacts' URIs
(object-store paths every pod can read) with the TF_CONFIG the Training Operator gives it;
worker 0 writes the model. This step creates the job and waits for it to end.
"""

from __future__ import annotations

import re
from typing import Any

from kerasflow.runtime import tfjob


def job_name(run_id: str) -> str:
    """A DNS-label TFJob name for one pipeline run."""
    slug = re.sub(r"[^a-z0-9-]+", "-", run_id.lower()).strip("-")[:40].strip("-")
    return f"kerasflow-train-{slug or 'run'}"


def worker_args(
    *,
    splits_uri: str,
    train_uri: str,
    hparams_uri: str,
    model_uri: str,
    epochs: int,
    batch_size: int,
    seed: int,
) -> list[str]:
    """The arguments every worker runs with (see kerasflow.modeling.distribute.run_worker)."""
    return [
        "--splits", splits_uri, "--train", train_uri, "--hparams", hparams_uri,
        "--model-dir", model_uri, "--backup-dir", f"{model_uri.rstrip('/')}-backup",
        "--epochs", str(epochs), "--batch-size", str(batch_size), "--seed", str(seed),
    ]  # fmt: skip


def run(
    *,
    run_id: str,
    namespace: str,
    image: str,
    workers: int,
    args: list[str],
    timeout_s: float = 6 * 3600,
    api: Any = None,
) -> dict[str, Any]:
    """Creates the TFJob of `workers` workers and waits for it; returns its manifest."""
    manifest = tfjob.tfjob_manifest(
        name=job_name(run_id), namespace=namespace, image=image, workers=workers, args=args
    )
    tfjob.create_and_wait(manifest, timeout_s=timeout_s, api=api)
    return manifest
