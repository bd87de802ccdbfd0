"""Turning split bundles into what Keras fits on, shared by the search and training steps."""

from __future__ import annotations

from typing import Any

from kerasflow import bundle, modeling


def load_training_data(
    splits_dir: str, train_dir: str, batch_size: int, seed: int
) -> tuple[dict, Any, Any]:
    """The metadata and tf.data pipelines of the (augmented) train split and the val split."""
    meta = bundle.load_meta(splits_dir)
    train = bundle.load_part(train_dir, "train")
    val = bundle.load_part(splits_dir, "val")
    train_ds = modeling.make_dataset(
        bundle.model_inputs(meta, train), bundle.targets(meta, train), batch_size, True, seed
    )
    val_ds = modeling.make_dataset(
        bundle.model_inputs(meta, val), bundle.targets(meta, val), batch_size
    )
    return meta, train_ds, val_ds


def class_weight_arg(meta: dict) -> dict[int, float] | None:
    """Keras' class_weight from the split metadata (classification only)."""
    weights = meta.get("class_weights")
    return {int(k): float(v) for k, v in weights.items()} if weights else None
