"""The on-disk form of data passed between steps (a "bundle").

A bundle is a folder: `meta.json` plus one data file per part. Tabular and text data are
Parquet tables (feature columns plus the label column); image data are `.npz` files with `x`
(N, H, W, C float32, raw pixel values) and `y`. Labels of classification tasks are stored as
integer class indices; the class names live in the metadata.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data.readers import RUN_ROWS, release_memory, trim_heap
from kerasflow.runtime.fileio import local_file_atomic, write_json_atomic


@dataclass
class Part:
    """One part of a bundle: a table (tabular, text) or arrays (image)."""

    frame: Any = None  # pandas.DataFrame with feature columns and the label column
    x: np.ndarray | None = None
    y: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame) if self.frame is not None else len(self.y)

    def labels(self, meta: dict) -> np.ndarray:
        """The label array of this part."""
        if self.frame is not None:
            return self.frame[meta[C.META_LABEL]].to_numpy()
        return self.y

    def take(self, idx: np.ndarray) -> Part:
        """A new part holding the rows at positions `idx`."""
        if self.frame is not None:
            return Part(frame=self.frame.iloc[idx].reset_index(drop=True))
        return Part(x=self.x[idx], y=self.y[idx])

    def take_apart(self, rows: dict[str, np.ndarray]) -> dict[str, Part]:
        """`{name: self.take(idx)}` for each entry of `rows`, emptying this part as it goes.

        A table is taken a column at a time, and each column leaves this part once taken, so
        that the table and the parts made from it are never all held at once; this part has no
        columns left afterwards. Arrays are taken whole.
        """
        if self.frame is None:
            return {name: self.take(idx) for name, idx in rows.items()}
        import pandas as pd

        frames = {name: pd.DataFrame(index=pd.RangeIndex(len(idx))) for name, idx in rows.items()}
        large = len(self.frame) >= RUN_ROWS
        for col in list(self.frame.columns):
            values = self.frame[col]
            for name, idx in rows.items():
                frames[name][col] = values.iloc[idx].reset_index(drop=True)
            del values
            del self.frame[col]
            if large:  # hand the column's pages back before the next one is taken
                trim_heap()
        return {name: Part(frame=frame) for name, frame in frames.items()}


@dataclass
class Bundle:
    """Metadata plus named parts."""

    meta: dict
    parts: dict[str, Part] = field(default_factory=dict)


def input_name(column: str) -> str:
    """A Keras/TF-Serving-safe input name for a column (letters, digits, underscores)."""
    name = re.sub(r"[^0-9A-Za-z_]+", "_", str(column)).strip("_") or "col"
    return name if name[0].isalpha() else f"f_{name}"


def save(path: str | Path, bundle: Bundle) -> None:
    """Writes a bundle folder; each file is written atomically, meta.json last."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for name, part in bundle.parts.items():
        if part.frame is not None:
            with local_file_atomic(path / f"{name}.parquet") as fh:
                write_parquet(part.frame, fh)
        else:
            with local_file_atomic(path / f"{name}.npz") as fh:
                np.savez(fh, x=part.x, y=part.y)
    write_json_atomic(path / C.META_FILE, bundle.meta)


ROW_GROUP_ROWS = 250_000
"""Rows per Parquet row group: a table is converted to Arrow and written this many at a time."""


def write_parquet(frame: Any, fh: Any) -> None:
    """`frame.to_parquet(fh, index=False)`, converting ROW_GROUP_ROWS rows at a time, so that
    Arrow never holds a copy of the whole table beside it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with pq.ParquetWriter(fh, schema) as writer:
        for start in range(0, max(len(frame), 1), ROW_GROUP_ROWS):
            rows = frame.iloc[start : start + ROW_GROUP_ROWS]
            writer.write_table(pa.Table.from_pandas(rows, schema=schema, preserve_index=False))


def read_parquet(path: Path) -> Any:
    """`pd.read_parquet(path)` of a table `write_parquet` wrote, read a column at a time: the
    whole table is never held in Arrow's buffers beside the frame made from them. Each column
    stays a block of its own, so a later column-by-column copy frees as it goes."""
    import pandas as pd
    import pyarrow.parquet as pq

    source = pq.ParquetFile(path)
    frame = None
    for name in source.schema_arrow.names:
        column = source.read(columns=[name], use_pandas_metadata=True).to_pandas()
        if frame is None:
            frame = pd.DataFrame(index=column.index)
        frame[name] = column[name]
        del column
    return frame if frame is not None else pd.read_parquet(path)


def load_meta(path: str | Path) -> dict:
    """Reads the metadata of a bundle folder."""
    return json.loads(Path(path, C.META_FILE).read_text())


def load_part(path: str | Path, name: str) -> Part:
    """Reads one part of a bundle folder."""
    path = Path(path)
    table = path / f"{name}.parquet"
    if table.exists():
        frame = read_parquet(table)
        release_memory()
        return Part(frame=frame)
    with np.load(path / f"{name}.npz", allow_pickle=False) as data:
        return Part(x=data["x"], y=data["y"])


def load(path: str | Path, names: tuple[str, ...]) -> Bundle:
    """Reads the metadata and the named parts of a bundle folder."""
    return Bundle(meta=load_meta(path), parts={n: load_part(path, n) for n in names})


def concat_parts(parts: list[Part]) -> Part:
    """One part holding the rows of `parts` in order."""
    if parts[0].frame is not None:
        import pandas as pd

        return Part(frame=pd.concat([p.frame for p in parts], ignore_index=True))
    return Part(x=np.concatenate([p.x for p in parts]), y=np.concatenate([p.y for p in parts]))


def fold_parts(meta: dict, train: Part, val: Part, fold: int) -> tuple[Part, Part]:
    """The train and validation parts of fold `fold` of a split bundle made with k folds.

    The split step keeps fold 0 as the `val` part and records a fold id for every row of
    train followed by val; any other fold is cut from the same rows.
    """
    ids = np.asarray(meta["folds"]["ids"])
    pool = concat_parts([train, val])
    return pool.take(np.flatnonzero(ids != fold)), pool.take(np.flatnonzero(ids == fold))


def feature_columns(meta: dict) -> list[str]:
    """The source column names of the features, in model-input order."""
    return [f["name"] for f in meta.get(C.META_FEATURES, [])]


def model_inputs(meta: dict, part: Part) -> Any:
    """What a Keras model built for `meta` takes: a dict of named inputs or an image array."""
    if part.frame is None:
        return {C.IMAGE_INPUT: part.x.astype("float32", copy=False)}
    return {f["input"]: column_input(f, part.frame[f["name"]]) for f in meta[C.META_FEATURES]}


def column_input(feature: dict, column: Any) -> np.ndarray:
    """The model input of one feature column: float32 numbers or text, shaped (rows, 1)."""
    if feature["kind"] == "numeric":
        return column.to_numpy(dtype="float32").reshape(-1, 1)
    return as_text(column).reshape(-1, 1)


def load_model_inputs(path: str | Path, name: str, meta: dict) -> tuple[Any, np.ndarray]:
    """The model inputs and targets of one part of a bundle folder.

    A table is read a column at a time, so the whole table never sits in memory beside the
    inputs made from it (about twice the inputs' size for a table of numbers and categories).
    """
    table = Path(path) / f"{name}.parquet"
    if not table.exists():
        part = load_part(path, name)
        return model_inputs(meta, part), targets(meta, part)
    import pandas as pd

    def column(col: str) -> Any:
        return pd.read_parquet(table, columns=[col])[col]

    inputs = {f["input"]: column_input(f, column(f["name"])) for f in meta[C.META_FEATURES]}
    y = column(meta[C.META_LABEL]).to_numpy()
    release_memory()
    return inputs, targets_of(meta, y)


def as_text(column: Any) -> np.ndarray:
    """`column.astype(str)` as an object array holding one str object per distinct value.

    Converting row by row makes a new str object for every row (about 60 bytes each, 7 text
    columns: 420 bytes per table row); here each distinct value is converted once and the rows
    point at it.
    """
    import pandas as pd

    codes, uniques = pd.factorize(column, use_na_sentinel=False)
    names = pd.Series(uniques, dtype=column.dtype).astype(str).to_numpy(dtype=object)
    return names[codes]


def targets(meta: dict, part: Part) -> np.ndarray:
    """The label array in the dtype the model trains on."""
    return targets_of(meta, part.labels(meta))


def targets_of(meta: dict, y: np.ndarray) -> np.ndarray:
    """Label values as the model's targets: int64 class indices or float32 values."""
    return y.astype("int64") if meta[C.META_TASK] == "classification" else y.astype("float32")


def hash_part(part: Part) -> str:
    """A content hash of a part (for lineage tags)."""
    h = hashlib.sha256()
    if part.frame is not None:
        import pandas as pd

        h.update(pd.util.hash_pandas_object(part.frame, index=False).to_numpy().tobytes())
    else:
        # The arrays' own buffers, not copies of them as bytes.
        h.update(np.ascontiguousarray(part.x))
        h.update(np.ascontiguousarray(part.y))
    return h.hexdigest()[:16]
