"""Normalize and split: train/val/test split and preprocessing statistics fitted on train only.

The statistics (means and variances of numeric inputs, vocabularies of categorical ones) go into
the bundle metadata; the model builder turns them into Keras preprocessing layers, so the
exported model takes raw features and training and serving share one transformation.
"""

from __future__ import annotations

import numpy as np

from kerasflow import bundle, stepio, tracking
from kerasflow import constants as C
from kerasflow.errors import UserError

STEP = "normalize_split"


def split_indices(
    labels: np.ndarray, task: str, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Seeded train/val/test row positions, stratified by label for classification."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    strat = labels if task == "classification" else None
    try:
        rest, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=strat
        )
        strat_rest = labels[rest] if strat is not None else None
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1.0 - test_fraction),
            random_state=seed,
            stratify=strat_rest,
        )
    except ValueError as exc:
        raise UserError(f"cannot split the data: {exc}") from None
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}


def fit_normalization(meta: dict, train: bundle.Part) -> dict:
    """Statistics of the train split that the model's preprocessing layers are built from."""
    if train.frame is None:
        x = train.x.astype("float64")
        return {C.IMAGE_INPUT: {"mean": float(x.mean()), "variance": float(max(x.var(), 1e-12))}}
    stats: dict = {}
    for feat in meta[C.META_FEATURES]:
        col = train.frame[feat["name"]]
        if feat["kind"] == "numeric":
            values = col.to_numpy(dtype="float64")
            stats[feat["input"]] = {
                "mean": float(values.mean()),
                "variance": float(max(values.var(), 1e-12)),
            }
        else:
            stats[feat["input"]] = {"vocabulary": sorted(col.astype(str).unique().tolist())}
    if meta[C.META_TASK] == "regression":
        y = train.labels(meta).astype("float64")
        stats["__target__"] = {"mean": float(y.mean()), "std": float(max(y.std(), 1e-6))}
    return stats


def class_weights(meta: dict, train: bundle.Part) -> dict[str, float]:
    """Balanced class weights (n / (k * count)) from the train split."""
    y = train.labels(meta).astype("int64")
    classes, counts = np.unique(y, return_counts=True)
    n, k = len(y), len(classes)
    return {str(int(c)): float(n / (k * cnt)) for c, cnt in zip(classes, counts, strict=True)}


def split_bundle(
    data: bundle.Bundle, val_fraction: float, test_fraction: float, seed: int
) -> bundle.Bundle:
    """Splits the one part of a clean bundle and fits the preprocessing statistics on train."""
    meta = dict(data.meta)
    part = data.parts["data"]
    parts = {
        name: part.take(rows)
        for name, rows in split_indices(
            part.labels(meta), meta[C.META_TASK], val_fraction, test_fraction, seed
        ).items()
    }
    meta[C.META_NORMALIZATION] = fit_normalization(meta, parts["train"])
    if meta[C.META_TASK] == "classification":
        meta["class_weights"] = class_weights(meta, parts["train"])
    meta["split_sizes"] = {name: len(p) for name, p in parts.items()}
    return bundle.Bundle(meta=meta, parts=parts)


@stepio.step_entry(STEP)
def run(
    dataset_dir: str,
    splits_dir: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    tracking_uri: str,
    parent_run_id: str,
) -> None:
    """Runs the step: reads the clean bundle, writes the split bundle."""
    with tracking.step_run(tracking_uri, parent_run_id, STEP):
        data = bundle.load(dataset_dir, ("data",))
        result = split_bundle(data, val_fraction, test_fraction, int(seed))
        bundle.save(splits_dir, result)
        tracking.log_params(
            {"val_fraction": val_fraction, "test_fraction": test_fraction, "seed": int(seed)}
        )
        import mlflow

        mlflow.log_metrics({f"{k}_rows": v for k, v in result.meta["split_sizes"].items()})
        tracking.log_dict_artifact(result.meta[C.META_NORMALIZATION], "normalization.json")
        stepio.progress(STEP, f"split sizes {result.meta['split_sizes']}")
