"""Reading raw data from a source URI: scikit-learn's bundled sets, local files or gs://.

A source is read into a `RawData`: a table (with the label column named) or image arrays. The
checks here are cheap enough for the CLI to run before the pipeline starts, so bad input ends
with one clear line before any step runs.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow.errors import UserError
from kerasflow.fileio import is_gcs, local_copy

BUILTINS = ("digits", "breast_cancer", "wine", "iris", "diabetes")
BUILTIN_PREFIX = "builtin:"
TABLE_SUFFIXES = (".csv", ".tsv", ".txt")


@dataclass
class RawData:
    """Data as read from the source, before cleaning."""

    frame: Any = None  # pandas.DataFrame holding features and the label column
    x: np.ndarray | None = None  # images (N, H, W, C)
    y: np.ndarray | None = None
    label: str = ""
    modality: str = "tabular"
    task_hint: str = ""
    class_names: list[str] = field(default_factory=list)


def check_source(uri: str, label: str) -> None:
    """Validates that `uri` names data kerasflow can read, without reading it all.

    Raises:
        UserError: unknown builtin, missing file, unsupported format, missing label column.
    """
    if uri.startswith(BUILTIN_PREFIX):
        _builtin_name(uri)
        return
    if is_gcs(uri):
        return  # checked by the ingest step, which has the credentials
    path = Path(uri)
    if not path.exists():
        raise UserError(f"data not found: {uri}")
    if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        if not label:
            raise UserError(f"--label is required for table data ({uri})")
        columns = _read_header(path)
        if label not in columns:
            raise UserError(f"label column '{label}' not found in {uri} (columns: {columns[:8]})")


def _builtin_name(uri: str) -> str:
    name = uri[len(BUILTIN_PREFIX) :]
    if name not in BUILTINS:
        raise UserError(f"unknown builtin dataset '{name}' (choose from {', '.join(BUILTINS)})")
    return name


def _read_header(path: Path) -> list[str]:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            sample = fh.read(64 * 1024)
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a text table (cannot decode it as UTF-8)") from None
    if not sample.strip():
        raise UserError(f"{path} is empty")
    dialect = _sniff(sample)
    return next(csv.reader([sample.splitlines()[0]], dialect))


def _sniff(sample: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def read_source(uri: str, label: str = "") -> RawData:
    """Reads the data at `uri`.

    Raises:
        UserError: when the source is missing, unreadable or lacks the label column.
    """
    if uri.startswith(BUILTIN_PREFIX):
        return _read_builtin(_builtin_name(uri))
    with local_copy(uri) as path:
        if path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
            return _read_table(path, label)
        raise UserError(f"unsupported data format: {uri} (expected a .csv or .tsv file)")


def _read_builtin(name: str) -> RawData:
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    bunch = loader(as_frame=name != "digits")
    if name == "digits":
        x = bunch.images.astype("float32")[..., np.newaxis]
        names = [str(n) for n in bunch.target_names]
        return RawData(
            x=x,
            y=bunch.target.astype("int64"),
            modality="image",
            task_hint="classification",
            class_names=names,
            label="digit",
        )
    frame = bunch.frame.copy()
    if name == "diabetes":
        return RawData(frame=frame, label="target", task_hint="regression")
    names = [str(n) for n in bunch.target_names]
    frame["target"] = [names[i] for i in frame["target"]]
    return RawData(frame=frame, label="target", task_hint="classification", class_names=names)


def _read_table(path: Path, label: str) -> RawData:
    import pandas as pd

    if not label:
        raise UserError(f"--label is required for table data ({path.name})")
    columns = _read_header(path)
    with path.open(newline="", encoding="utf-8") as fh:
        dialect = _sniff(fh.read(64 * 1024))
    try:
        frame = pd.read_csv(path, sep=dialect.delimiter, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from None
    if frame.empty:
        raise UserError(f"{path.name} has a header but no rows")
    if label not in frame.columns:
        raise UserError(f"label column '{label}' not found in {path.name} (columns: {columns[:8]})")
    return RawData(frame=frame, label=label)
