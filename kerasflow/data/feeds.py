"""Turning split bundles into what Keras fits on, shared by the search and training steps.

`DataFeed` keeps the train and validation arrays in memory and hands out tf.data pipelines
for any batch size (a tuned hyperparameter) and k-fold splits for a cross-validated objective.
`StreamFeed` reads tables too long for that a Parquet row group at a time; `open_feed` picks
one of them by the train split's length.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
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

    streamed = False

    def __init__(self, arrays: TrainingArrays, seed: int) -> None:
        self.arrays = arrays
        self.meta = arrays.meta
        self.seed = seed
        self._cache: dict[int, tuple[Any, Any]] = {}
        self._rows: Any = None

    def content_hash(self) -> str:
        """A short hash of the data (names a search's directory)."""
        return content_hash(self.arrays)

    def samples(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Train and val inputs for what needs example rows (here: all of them)."""
        return self.arrays.train_x, self.arrays.val_x

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


STREAM_SAMPLE_ROWS = 2_000
"""Rows of each split a StreamFeed reads for what needs example rows (TFLite's representative
rows, the logged model's input example)."""


@dataclasses.dataclass(frozen=True)
class _Piece:
    """One row group of a Parquet file."""

    path: str
    group: int
    rows: int


def _pieces(path: Path) -> list[_Piece]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    groups = (meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    return [_Piece(str(path), i, rows) for i, rows in enumerate(groups) if rows]


def parquet_rows(path: Path) -> int:
    """The rows of a Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


class StreamFeed:
    """tf.data pipelines that read the train and val tables a Parquet row group at a time.

    No split is held in memory: a pipeline holds the model inputs of one row group (250,000
    rows, artifacts.ROW_GROUP_ROWS) as tensors, and tf.data cuts its batches from them. Shuffling
    visits the train row groups in a new order each epoch and permutes the rows inside each row
    group, both drawn from the seed and the epoch; a batch holds rows of one row group. k-fold
    cross-validation, ensembles and transfer learning need the rows in memory (DataFeed).
    """

    streamed = True

    def __init__(self, splits_dir: str, train_dir: str, seed: int) -> None:
        self.meta = artifacts.load_meta(splits_dir)
        self.seed = seed
        self._train = _pieces(Path(train_dir) / "train.parquet")
        self._val = _pieces(Path(splits_dir) / "val.parquet")
        self._files = (Path(train_dir) / "train.parquet", Path(splits_dir) / "val.parquet")
        self._cache: dict[int, tuple[Any, Any]] = {}
        self._samples: tuple[dict, dict] | None = None

    @property
    def rows(self) -> tuple[int, int]:
        """The rows of the train and val splits."""
        return sum(p.rows for p in self._train), sum(p.rows for p in self._val)

    def content_hash(self) -> str:
        """A short hash of the train and val tables' bytes (names a search's directory)."""
        h = hashlib.sha256()
        for path in self._files:
            h.update(f"{path.name}:".encode())
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        return h.hexdigest()[:16]

    def samples(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Inputs of the first STREAM_SAMPLE_ROWS rows of train and of val: a random sample of
        each when the split step shuffled the rows, the oldest rows of a split by time."""
        if self._samples is None:
            self._samples = tuple(  # type: ignore[assignment]
                self._read(pieces[0], STREAM_SAMPLE_ROWS)[0] for pieces in (self._train, self._val)
            )
        return self._samples  # type: ignore[return-value]

    def datasets(self, batch_size: int) -> tuple[Any, Any]:
        """The shuffled train pipeline and the val pipeline for `batch_size`."""
        batch_size = int(batch_size)
        if batch_size not in self._cache:
            self._cache[batch_size] = (
                self._dataset(self._train, batch_size, True, self.seed),
                self._dataset(self._val, batch_size, False, self.seed),
            )
        return self._cache[batch_size]

    def merged(self, batch_size: int, seed: int) -> Any:
        """A shuffled pipeline over the row groups of train and val together."""
        return self._dataset(self._train + self._val, int(batch_size), True, seed)

    def folds(self, k: int, batch_size: int) -> list[tuple[Any, Any]]:
        """Not available: k-fold holds every row in memory (open_feed gives a DataFeed)."""
        raise UserError("k-fold cross-validation needs the rows in memory (stream_rows 0)")

    def _read(self, piece: _Piece, limit: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
        import pyarrow.parquet as pq

        features = self.meta[C.META_FEATURES]
        names = [f["name"] for f in features] + [self.meta[C.META_LABEL]]
        table = pq.ParquetFile(piece.path).read_row_group(piece.group, columns=names)
        if limit:
            table = table.slice(0, limit)
        frame = table.to_pandas()
        del table
        x = {f["input"]: artifacts.column_input(f, frame[f["name"]]) for f in features}
        return x, artifacts.targets_of(self.meta, frame[self.meta[C.META_LABEL]].to_numpy())

    def _dataset(self, pieces: list[_Piece], batch_size: int, shuffle: bool, seed: int) -> Any:
        import tensorflow as tf

        if not pieces:
            raise UserError("a split to stream has no rows")
        first_x, first_y = self._read(pieces[0], 1)
        signature = (
            {k: _spec(v) for k, v in first_x.items()},
            _spec(first_y),
        )
        epochs = iter(range(1 << 62))

        def chunks():
            # One row group at a time, its rows permuted when shuffling; a new order each epoch.
            rng = np.random.default_rng([seed, next(epochs)])
            order = rng.permutation(len(pieces)) if shuffle else range(len(pieces))
            for i in order:
                x, y = self._read(pieces[i])
                if shuffle:
                    rows = rng.permutation(len(y))
                    x, y = {k: v[rows] for k, v in x.items()}, y[rows]
                yield x, y
                del x, y

        def batches(x: Any, y: Any) -> Any:
            # Batches are slices of the row group's tensors, cut inside tf.data.
            def cut(start: Any) -> Any:
                return tf.nest.map_structure(lambda t: t[start : start + batch_size], (x, y))

            return tf.data.Dataset.range(0, tf.shape(y, tf.int64)[0], batch_size).map(cut)

        count = sum(-(-p.rows // batch_size) for p in pieces)
        ds = tf.data.Dataset.from_generator(chunks, output_signature=signature).flat_map(batches)
        ds = ds.apply(tf.data.experimental.assert_cardinality(count))
        return ds.prefetch(2)


def _spec(value: np.ndarray) -> Any:
    import tensorflow as tf

    dtype = tf.string if value.dtype == object else tf.as_dtype(value.dtype)
    return tf.TensorSpec((None, *value.shape[1:]), dtype)


def open_feed(
    splits_dir: str, train_dir: str, seed: int, stream_rows: int, *, in_memory: bool = False
) -> DataFeed | StreamFeed:
    """The feed of the splits: a StreamFeed when the train split is a table of more than
    `stream_rows` rows (0: never), unless `in_memory` or normalize_split made folds."""
    table = Path(train_dir) / "train.parquet"
    if stream_rows and not in_memory and table.exists() and parquet_rows(table) > stream_rows:
        feed = StreamFeed(splits_dir, train_dir, seed)
        if not (feed.meta.get("folds") or {}).get("k"):
            return feed
    return DataFeed(load_training_arrays(splits_dir, train_dir), seed)


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
