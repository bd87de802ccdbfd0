"""The drift reference: a small record of the train split a model learned from.

The split step writes it (`drift_reference.json`) into its splits artifact and logs it to its
MLflow run, so the champion's reference is found from the registry: the champion's train run,
its pipeline run, that run's normalize_split run. It keeps, per feature, what the drift tests
need and no more: a seeded sample of at most `SAMPLE_SIZE` values of a number, the counts of a
category, the vocabulary of a text and a sample of its per-document out-of-vocabulary shares,
per-image statistics of images, and the label's class counts or sample.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.data.textprep import tokenize
from kerasflow.runtime.errors import UserError

REFERENCE_FILE = "drift_reference.json"
REFERENCE_VERSION = 1
SAMPLE_SIZE = 1000
MAX_CATEGORIES = 200
MAX_VOCABULARY = 20000
OTHER = "(other)"
IMAGE_STATISTICS = ("mean_intensity", "contrast", "bright_share")
"""Per-image statistics compared for images: the mean and standard deviation of an image's
pixels and its share of pixels brighter than the middle of the training pixel range."""


def _sample(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    values = np.asarray(values, dtype="float64")
    values = values[np.isfinite(values)]
    if len(values) > SAMPLE_SIZE:
        values = rng.choice(values, SAMPLE_SIZE, replace=False)
    # Full precision: a discrete feature's values must match later data's exactly.
    return [float(v) for v in values]


def image_statistics(x: np.ndarray, pixel_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Per-image statistics of a batch of images (N, H, W[, C]) on the training pixel scale."""
    rows = np.asarray(x).reshape(len(x), -1)
    middle = (pixel_range[0] + pixel_range[1]) / 2.0
    # A block of images at a time: a float64 copy of a whole split would double its memory.
    step = max(1, (1 << 20) // max(1, rows.shape[1]))
    parts: dict[str, list[np.ndarray]] = {"mean_intensity": [], "contrast": [], "bright_share": []}
    for start in range(0, len(rows), step):
        block = rows[start : start + step].astype("float64")
        parts["mean_intensity"].append(block.mean(axis=1))
        parts["contrast"].append(block.std(axis=1))
        parts["bright_share"].append((block > middle).mean(axis=1))
    return {
        name: np.concatenate(values) if values else np.zeros(0) for name, values in parts.items()
    }


def oov_shares(texts: Any, vocabulary: set[str]) -> np.ndarray:
    """Each document's share of tokens outside `vocabulary` (0 for an empty document)."""
    shares = []
    for text in texts:
        tokens = tokenize(text)
        shares.append(sum(t not in vocabulary for t in tokens) / len(tokens) if tokens else 0.0)
    return np.asarray(shares, dtype="float64")


def build_reference(meta: dict, train: artifacts.Part, val: artifacts.Part, seed: int = 0) -> dict:
    """The drift reference of a split bundle, from its train part (and, for text, val)."""
    rng = np.random.default_rng(seed)
    task = meta[C.META_TASK]
    reference: dict[str, Any] = {
        "version": REFERENCE_VERSION,
        "modality": meta[C.META_MODALITY],
        "task": task,
        "rows": len(train),
        "source": meta.get(C.META_SOURCE, ""),
        "features": {},
    }
    if train.frame is None:
        low, high = float(train.x.min()), float(train.x.max())
        stats = image_statistics(train.x, (low, high))
        reference["images"] = {
            "input": C.IMAGE_INPUT,
            "shape": [int(s) for s in train.x.shape[1:]],
            "pixel_range": [low, high],
            "statistics": {k: _sample(v, rng) for k, v in stats.items()},
        }
    else:
        for feat in meta[C.META_FEATURES]:
            column = train.frame[feat["name"]]
            entry: dict[str, Any] = {"kind": feat["kind"], "input": feat["input"]}
            if feat["kind"] == "numeric":
                entry["sample"] = _sample(column.to_numpy(dtype="float64"), rng)
            elif feat["kind"] == "categorical":
                counts = Counter(str(v) for v in column.dropna())
                top = dict(counts.most_common(MAX_CATEGORIES))
                other = sum(counts.values()) - sum(top.values())
                entry["counts"] = {**top, **({OTHER: other} if other else {})}
            else:
                words = Counter(t for text in column for t in tokenize(text))
                vocabulary = [w for w, _ in words.most_common(MAX_VOCABULARY)]
                held_out = val.frame[feat["name"]] if val is not None and len(val) else column
                entry["vocabulary"] = vocabulary
                entry["oov_sample"] = _sample(oov_shares(held_out, set(vocabulary)), rng)
            reference["features"][feat["name"]] = entry
    labels = train.labels(meta)
    label: dict[str, Any] = {"name": meta[C.META_LABEL], "task": task}
    if task == "classification":
        names = list(meta.get(C.META_CLASS_NAMES) or [])
        counts = np.bincount(np.asarray(labels, dtype="int64"), minlength=len(names))
        label.update(classes=names, counts=[int(c) for c in counts])
    else:
        label["sample"] = _sample(np.asarray(labels, dtype="float64"), rng)
    reference["label"] = label
    return reference


class NoReference(UserError):
    """The champion's training recorded no drift reference (it predates them)."""


def load_reference(text: str, where: str) -> dict:
    """A reference from its JSON text.

    Raises:
        UserError: when the text is not a drift reference of a version this code reads.
    """
    try:
        reference = json.loads(text)
    except ValueError:
        raise UserError(f"{where} is not a drift reference (not JSON)") from None
    if not isinstance(reference, dict) or reference.get("version") != REFERENCE_VERSION:
        raise UserError(f"{where} is not a drift reference of version {REFERENCE_VERSION}")
    return reference


def champion_reference(tracking_uri: str, model_name: str) -> tuple[dict, dict]:
    """The drift reference of the champion of `model_name`, and facts about the champion.

    Raises:
        UserError: no champion.
        NoReference: a champion whose training recorded no reference.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from kerasflow.tracking import registry

    champion = registry.get_champion(tracking_uri, model_name)
    if champion is None:
        raise UserError(f"model '{model_name}' has no champion in the registry at {tracking_uri}")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    facts = {
        "registry_version": champion.registry_version,
        "serving_version": champion.serving_version,
        "train_run_id": champion.run_id,
    }
    where = f"{champion.describe(model_name)}"
    try:
        train_run = client.get_run(champion.run_id) if champion.run_id else None
        parent = train_run.data.tags.get("mlflow.parentRunId", "") if train_run else ""
        split_run = _step_run(client, train_run, parent, "normalize_split") if parent else ""
    except MlflowException as exc:
        raise UserError(f"cannot read the training runs of {where}: {exc}") from None
    if not split_run:
        raise NoReference(f"{where} has no normalize_split run to take a drift reference from")
    facts["pipeline_run_id"], facts["split_run_id"] = parent, split_run
    try:
        with tempfile.TemporaryDirectory(prefix="kerasflow-drift-") as tmp:
            local = client.download_artifacts(split_run, REFERENCE_FILE, tmp)
            text = Path(local).read_text(encoding="utf-8")
    except Exception:  # noqa: BLE001 - any failure means the reference is not there
        raise NoReference(
            f"{where} was trained before runs recorded a drift reference ({REFERENCE_FILE} is "
            "missing from its normalize_split run): retrain it"
        ) from None
    return load_reference(text, f"{REFERENCE_FILE} of {where}"), facts


def _step_run(client: Any, train_run: Any, parent: str, step: str) -> str:
    runs = client.search_runs(
        [train_run.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}' and tags.`{C.TAG_STEP}` = '{step}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0].info.run_id if runs else ""
