"""Turning split bundles into what Keras fits on, shared by the search and training steps.

`DataFeed` keeps the train and validation arrays in memory and hands out tf.data pipelines
for any batch size (a tuned hyperparameter) and k-fold splits for a cross-validated objective.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.modeling import builders
from kerasflow.runtime.errors import UserError


@dataclasses.dataclass
class TrainingArrays:
    """Model inputs and targets of the (augmented) train split and of the val split.

    The augment step writes the original rows first, then its copies in the same order, so
    train row `j` is a copy of original row `j % originals`.
    """

    meta: dict
    train_x: dict[str, np.ndarray]
    train_y: np.ndarray
    val_x: dict[str, np.ndarray]
    val_y: np.ndarray
    originals: int


def load_training_arrays(splits_dir: str, train_dir: str) -> TrainingArrays:
    """Reads the metadata, the augmented train split and the val split into memory."""
    meta = artifacts.load_meta(splits_dir)
    train_x, train_y = artifacts.load_model_inputs(train_dir, "train", meta)
    val_x, val_y = artifacts.load_model_inputs(splits_dir, "val", meta)
    originals = int(meta.get("split_sizes", {}).get("train", len(train_y))) or len(train_y)
    if len(train_y) % originals:
        originals = len(train_y)
    return TrainingArrays(meta, train_x, train_y, val_x, val_y, originals)


def load_training_data(
    splits_dir: str, train_dir: str, batch_size: int, seed: int
) -> tuple[dict, Any, Any]:
    """The metadata and tf.data pipelines of the (augmented) train split and the val split."""
    arrays = load_training_arrays(splits_dir, train_dir)
    train_ds, val_ds = DataFeed(arrays, seed).datasets(batch_size)
    return arrays.meta, train_ds, val_ds


def content_hash(arrays: TrainingArrays) -> str:
    """A short hash of the train and val inputs and targets (names a search's directory)."""
    h = hashlib.sha256()
    for part in (arrays.train_x, arrays.val_x, {"y": arrays.train_y}, {"y": arrays.val_y}):
        for name in sorted(part):
            value = np.asarray(part[name])
            h.update(f"{name}:{value.dtype}:{value.shape}".encode())
            if value.dtype == object or value.dtype.kind in "US":
                h.update("\x00".join(map(str, value.ravel())).encode())
            else:
                h.update(np.ascontiguousarray(value))  # its buffer, not a bytes copy of it
    return h.hexdigest()[:16]


def _take(x: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in x.items()}


def _concat(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def fold_of_groups(labels: np.ndarray | None, groups: int, k: int, seed: int) -> np.ndarray:
    """Assigns each of `groups` rows a fold in [0, k), stratified by label when given."""
    rng = np.random.default_rng(seed)
    folds = np.empty(groups, dtype=np.int64)
    if labels is None:
        order = rng.permutation(groups)
        folds[order] = np.arange(groups) % k
        return folds
    offset = 0
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # Continue the round robin across classes so small classes do not all land in fold 0.
        folds[members] = (np.arange(len(members)) + offset) % k
        offset += len(members)
    return folds


class DataFeed:
    """tf.data pipelines over in-memory arrays, cached per batch size, and k-fold splits."""

    def __init__(self, arrays: TrainingArrays, seed: int) -> None:
        self.arrays = arrays
        self.meta = arrays.meta
        self.seed = seed
        self._cache: dict[int, tuple[Any, Any]] = {}
        self._rows: Any = None

    def datasets(self, batch_size: int) -> tuple[Any, Any]:
        """The shuffled train pipeline and the val pipeline for `batch_size`."""
        batch_size = int(batch_size)
        if batch_size not in self._cache:
            train, val = self.rows()
            self._cache[batch_size] = (
                builders.make_dataset(train, None, batch_size, True, self.seed),
                builders.make_dataset(val, None, batch_size),
            )
        return self._cache[batch_size]

    def rows(self) -> tuple[Any, Any]:
        """The train rows and the val rows as tensors, made once and shared by the pipelines of
        every batch size."""
        if self._rows is None:
            a = self.arrays
            self._rows = (builders.Rows(a.train_x, a.train_y), builders.Rows(a.val_x, a.val_y))
        return self._rows

    def merged(self, batch_size: int, seed: int) -> Any:
        """A shuffled pipeline over train and val together (for a refit on both), its tensors
        joined a column at a time from the arrays."""
        a = self.arrays
        joined = builders.Rows.joined((a.train_x, a.train_y), (a.val_x, a.val_y))
        return builders.make_dataset(joined, None, batch_size, True, seed)

    def folds(self, k: int, batch_size: int) -> list[tuple[Any, Any]]:
        """`k` (train, held-out) pipeline pairs over the train and val splits pooled.

        The folds are normalize_split's when it made `k` of them, else assigned here.
        Augmented copies stay in the fold of their original row and are never held out, so no
        copy of a held-out row is trained on and scores are on real rows only.
        """
        a = self.arrays
        n_val = len(a.val_y)
        groups = a.originals + n_val
        if k > groups:
            raise UserError(f"kfold={k} needs at least {k} rows; the data has {groups}")
        given = self.meta.get("folds") or {}
        if int(given.get("k", 0)) == k and len(given.get("ids", [])) == groups:
            # normalize_split assigned folds already (its `folds` option), in this row order.
            fold = np.asarray(given["ids"], dtype=np.int64)
        else:
            labels = None
            if self.meta[C.META_TASK] == "classification":
                labels = np.concatenate([a.train_y[: a.originals], a.val_y])
            fold = fold_of_groups(labels, groups, k, self.seed)
        x = _concat(a.train_x, a.val_x)
        y = np.concatenate([a.train_y, a.val_y])
        row_group = np.concatenate(
            [np.arange(len(a.train_y)) % a.originals, a.originals + np.arange(n_val)]
        )
        original = np.concatenate([np.arange(len(a.train_y)) < a.originals, np.ones(n_val, bool)])
        pairs = []
        for i in range(k):
            held = fold[row_group] == i
            fit_idx = np.flatnonzero(~held)
            out_idx = np.flatnonzero(held & original)
            pairs.append(
                (
                    builders.make_dataset(
                        _take(x, fit_idx), y[fit_idx], batch_size, True, self.seed + i
                    ),
                    builders.make_dataset(_take(x, out_idx), y[out_idx], batch_size),
                )
            )
        return pairs


class FixedFeed:
    """A feed over ready-made pipelines: one batch size, no k-fold."""

    def __init__(self, meta: dict, train_ds: Any, val_ds: Any) -> None:
        self.meta = meta
        self._pair = (train_ds, val_ds)

    def datasets(self, batch_size: int) -> tuple[Any, Any]:
        """The pipelines given at construction (their batch size is fixed)."""
        return self._pair

    def folds(self, k: int, batch_size: int) -> list[tuple[Any, Any]]:
        """Not available: k-fold needs the arrays (use DataFeed)."""
        raise UserError("k-fold search needs the data as arrays")


def class_weight_arg(meta: dict) -> dict[int, float] | None:
    """Keras' class_weight from the split metadata (classification only)."""
    weights = meta.get("class_weights")
    return {int(k): float(v) for k, v in weights.items()} if weights else None
