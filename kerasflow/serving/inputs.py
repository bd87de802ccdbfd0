"""What `kerasflow predict --input` accepts, turned into the tensors a served model takes.

The model's input signature says its modality: one 4-D float input `image` (H, W, C) for
images, one string input `text` for text, named columns for tables. An image model takes image
files or a folder of them (converted and resized as training read its class folders); a text
model takes a .txt file (one document, as training reads one), a folder of them, or rows with a
`text` column; every model takes rows from CSV, JSON or Parquet. With a column named, a table's
column feeds the one input of a text model (its texts) or an image model (image file paths,
relative to the table's folder).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kerasflow import constants as C
from kerasflow.data.class_folders import (
    IMAGE_SUFFIXES,
    TEXT_SUFFIXES,
    read_image_file,
    read_text_file,
)
from kerasflow.runtime.errors import UserError
from kerasflow.serving import dtypes
from kerasflow.serving.client import build_inputs, read_rows
from kerasflow.serving.signature import TensorSpec

ROW_SUFFIXES = (".csv", ".json", ".parquet")


@dataclass
class Batch:
    """The request's tensors and a name for each row (a file name or a row number)."""

    inputs: dict[str, np.ndarray]
    names: list[str]


def modality(specs: Mapping[str, TensorSpec]) -> str:
    """'image', 'text' or 'tabular', from a signature's inputs."""
    if set(specs) == {C.IMAGE_INPUT}:
        shape = specs[C.IMAGE_INPUT].shape
        if shape is not None and len(shape) == 4 and None not in shape[1:]:
            return "image"
    if set(specs) == {C.TEXT_INPUT} and specs[C.TEXT_INPUT].dtype == dtypes.DT_STRING:
        return "text"
    return "tabular"


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in suffixes)
    if not files:
        raise UserError(f"--input {folder} holds no {' or '.join(suffixes)} files")
    return files


def _image_batch(paths: list[Path], root: Path, spec: TensorSpec) -> Batch:
    _, height, width, channels = spec.shape  # type: ignore[misc]
    if channels not in (1, 3):
        raise UserError(f"the model takes images with {channels} channels; only 1 or 3 are read")
    images = np.stack([read_image_file(p, height, width, channels) for p in paths])
    return Batch({C.IMAGE_INPUT: images}, [_name(p, root) for p in paths])


def _text_batch(paths: list[Path], root: Path) -> Batch:
    texts = []
    for path in paths:
        text = read_text_file(path)
        if text is None:
            raise UserError(f"{path} is not a text file that can be read")
        texts.append([text])
    return Batch({C.TEXT_INPUT: np.array(texts, dtype=object)}, [_name(p, root) for p in paths])


def _name(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if root.is_dir() else path.name


def read_table(path: Path) -> list:
    """Rows of a CSV, JSON or Parquet file (Parquet through pandas)."""
    if path.suffix.lower() != ".parquet":
        return read_rows(str(path))
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read --input {path} as Parquet: {exc}") from None
    if frame.empty:
        raise UserError(f"--input {path} holds no rows")
    return frame.to_dict(orient="records")


def _row_batch(rows: list, specs: Mapping[str, TensorSpec]) -> Batch:
    if rows and isinstance(rows[0], dict):
        # Extra columns (an id, the label) are left out when every input is there.
        rows = [{k: v for k, v in row.items() if k in specs} if set(specs) <= set(row) else row
                for row in rows]  # fmt: skip
    return Batch(build_inputs(rows, specs), [str(i) for i in range(len(rows))])


def _column_batch(path: Path, rows: list, column: str, kind: str, specs) -> Batch:
    if kind == "tabular":
        raise UserError(
            "--column names the text or image-path column for a text or image model; this "
            f"model takes table columns by name ({', '.join(sorted(specs))})"
        )
    if not isinstance(rows[0], dict) or column not in rows[0]:
        found = ", ".join(map(str, rows[0])) if isinstance(rows[0], dict) else "none"
        raise UserError(f"--input {path} has no column {column!r} (columns: {found})")
    values = ["" if row.get(column) is None else str(row[column]) for row in rows]
    if kind == "text":
        texts = np.array([[v] for v in values], dtype=object)
        return Batch({C.TEXT_INPUT: texts}, [str(i) for i in range(len(rows))])
    files = [path.parent / v for v in values]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"--column {column}: {len(missing)} image files missing, e.g. {missing[0]}")
    return _image_batch(files, path.parent, specs[C.IMAGE_INPUT])


def read_batch(path_text: str, specs: Mapping[str, TensorSpec], column: str = "") -> Batch:
    """The tensors for `specs` from what --input names (and --column picks, when given).

    Raises:
        UserError: a missing path, a kind of file this model cannot take, unreadable files.
    """
    path = Path(path_text)
    if not path.exists():
        raise UserError(f"--input {path_text} does not exist")
    kind = modality(specs)
    suffix = path.suffix.lower()
    if column:
        if not (path.is_file() and suffix in ROW_SUFFIXES):
            raise UserError(f"--column reads a table: give a {', '.join(ROW_SUFFIXES)} file")
        return _column_batch(path, read_table(path), column, kind, specs)
    if path.is_file() and suffix in ROW_SUFFIXES:
        return _row_batch(read_table(path), specs)
    wanted = {"image": IMAGE_SUFFIXES, "text": TEXT_SUFFIXES}.get(kind)
    if wanted is None:
        raise UserError(
            f"--input {path_text}: this model takes table rows "
            f"({', '.join(sorted(specs))}); give a {', '.join(ROW_SUFFIXES)} file"
        )
    if path.is_dir():
        files = _files(path, wanted)
    elif suffix in wanted:
        files = [path]
    else:
        raise UserError(
            f"--input {path_text}: this {kind} model takes {' '.join(wanted)} files, a folder "
            f"of them or rows in a {', '.join(ROW_SUFFIXES)} file"
        )
    if kind == "image":
        return _image_batch(files, path, specs[C.IMAGE_INPUT])
    return _text_batch(files, path)
