"""Reading data files into pandas frames or arrays: CSV/TSV, Parquet, JSON Lines and NumPy .npz.

Delimited text is sniffed (encoding, delimiter) and read as strings, so that junk values such
as 'n/a' or '?' reach the cleaning step intact and are counted there instead of vanishing into
pandas' NA parsing. A file that is not what its name says ends in a UserError naming it.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow.runtime.errors import UserError, first_line

DELIMITED_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
NPZ_SUFFIXES = (".npz",)
TABLE_SUFFIXES = DELIMITED_SUFFIXES + PARQUET_SUFFIXES + JSONL_SUFFIXES
SNIFF_BYTES = 64 * 1024
DELIMITERS = ",;\t|"
# Share of control characters above which bytes are taken for binary, not text.
MAX_CONTROL_SHARE = 0.01
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
# Rows of delimited text read at a time when a table is coerced as it is read: their strings
# are the largest thing ingest holds (about 60 bytes a cell as Python strings).
RUN_ROWS = 100_000


@dataclass
class TextFormat:
    """What sniffing a delimited text file found."""

    encoding: str
    delimiter: str
    columns: list[str]


def file_format(path: Path) -> str:
    """The format of a file from its suffix: delimited, parquet, jsonl, npz or '' (unknown)."""
    suffix = path.suffix.lower()
    for name, suffixes in (
        ("delimited", DELIMITED_SUFFIXES),
        ("parquet", PARQUET_SUFFIXES),
        ("jsonl", JSONL_SUFFIXES),
        ("npz", NPZ_SUFFIXES),
    ):
        if suffix in suffixes:
            return name
    return ""


def detect_encoding(data: bytes, name: str) -> str:
    """The encoding of the first bytes of a text file (UTF-8 first, then Windows/Latin-1).

    Raises:
        UserError: when the bytes are empty or look binary.
    """
    if not data.strip():
        raise UserError(f"{name} is empty")
    controls = sum(1 for b in data if b < 32 and b not in (9, 10, 13))
    if b"\x00" in data or controls > MAX_CONTROL_SHARE * len(data):
        raise UserError(f"{name} is not a text table (it holds binary data)")
    for encoding in ENCODINGS:
        try:
            data.decode(encoding)
            return encoding
        except UnicodeDecodeError as exc:
            # A sample may end inside a multi-byte character.
            if encoding == "utf-8-sig" and len(data) == SNIFF_BYTES and exc.start >= len(data) - 3:
                return encoding
    return ENCODINGS[-1]  # pragma: no cover (latin-1 decodes any byte)


def sniff_text_table(path: Path) -> TextFormat:
    """Encoding, delimiter and header of a delimited text file.

    Raises:
        UserError: empty, binary or undecodable file.
    """
    with path.open("rb") as fh:
        data = fh.read(SNIFF_BYTES)
    encoding = detect_encoding(data, path.name)
    lines = [line for line in data.decode(encoding, errors="ignore").splitlines() if line.strip()]
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".tab") else _sniff_delimiter(lines)
    columns = [c.strip() for c in next(csv.reader([lines[0]], delimiter=delimiter))]
    return TextFormat(encoding, delimiter, columns)


def _sniff_delimiter(lines: list[str]) -> str:
    sample = "\n".join(lines[:50])
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        # The Sniffer gives up on ragged or quoted data: take the delimiter that splits the
        # header into the most fields and every other line into as many.
        best, best_fields = ",", 1
        for delim in DELIMITERS:
            counts = {len(next(csv.reader([line], delimiter=delim))) for line in lines[:50]}
            fields = len(next(csv.reader([lines[0]], delimiter=delim)))
            if fields > best_fields and len(counts) == 1:
                best, best_fields = delim, fields
        return best


def table_columns(path: Path) -> list[str]:
    """The column names of a table file, read cheaply (header, schema or first record).

    Raises:
        UserError: when the file cannot be read as its suffix says.
    """
    kind = file_format(path)
    if kind == "delimited":
        return sniff_text_table(path).columns
    if kind == "parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(path).names)
        except Exception:  # pyarrow raises several types for a file that is not Parquet
            raise UserError(f"{path.name} is not a readable Parquet file") from None
    if kind == "jsonl":
        return list(_first_json_record(path))
    raise UserError(f"{path.name} is not a table file")


def _first_json_record(path: Path) -> dict:
    with path.open("rb") as fh:
        sample = fh.read(SNIFF_BYTES)
    text = sample.decode(detect_encoding(sample, path.name), errors="ignore")
    stripped = text.lstrip()
    if stripped.startswith("["):
        return {}  # a JSON array of records: the full read checks it
    first = next((line for line in text.splitlines() if line.strip()), "")
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        raise UserError(f"{path.name} line 1 is not valid JSON") from None
    if not isinstance(record, dict):
        raise UserError(f"{path.name} must hold one JSON object per line")
    return record


def read_table(path: Path) -> Any:
    """Reads a table file into a pandas DataFrame.

    Delimited text comes back as strings (cleaning coerces types); Parquet and JSON keep theirs.

    Raises:
        UserError: when the file is empty, malformed or not of the format its suffix says.
    """
    import pandas as pd

    kind = file_format(path)
    if kind == "delimited":
        frame = next(iter(_delimited_runs(path, chunk_rows=None)))
    elif kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception:  # pyarrow raises several types for a file that is not Parquet
            raise UserError(f"{path.name} is not a readable Parquet file") from None
    elif kind == "jsonl":
        frame = _read_json(path)
    else:
        raise UserError(f"{path.name} is not a table file")
    _check_table(frame, path.name)
    return frame


def read_delimited_runs(path: Path, columns: list[str] | None = None) -> Iterator[Any]:
    """Reads delimited text as strings, RUN_ROWS rows at a time (DataFrames), as `read_table`
    reads it whole; `columns` reads only those.

    Raises:
        UserError: when the file is malformed or has a header but no rows.
    """
    for number, frame in enumerate(_delimited_runs(path, chunk_rows=RUN_ROWS, columns=columns)):
        if number == 0:
            _check_table(frame, path.name)
        yield frame


def _delimited_runs(
    path: Path, chunk_rows: int | None, columns: list[str] | None = None
) -> Iterator[Any]:
    import pandas as pd

    fmt = sniff_text_table(path)
    _check_unique_columns(fmt.columns, path.name)
    names = [str(c).strip() for c in fmt.columns]
    wanted = None if columns is None else [names.index(c) for c in columns]
    try:
        read = pd.read_csv(
            path,
            sep=fmt.delimiter,
            encoding=fmt.encoding,
            dtype=str,
            keep_default_na=False,
            skipinitialspace=True,
            encoding_errors="replace",
            usecols=wanted,
            chunksize=chunk_rows,
        )
        runs = [read] if chunk_rows is None else read
        empty = True
        for frame in runs:
            frame.columns = [str(c).strip() for c in frame.columns]
            empty = False
            yield frame
            del frame
            if chunk_rows is not None:
                # A run's strings are freed once the caller has converted them; hand their
                # pages back before the next run, so that the runs do not pile up.
                trim_heap()
        if empty:  # a header alone: the whole read gives an empty frame, a chunked one none
            yield pd.DataFrame(columns=names if columns is None else columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot parse {path.name}: {first_line(exc)}") from None


def _check_table(frame: Any, name: str) -> None:
    if len(frame.columns) == 0:
        raise UserError(f"{name} has no columns")
    if frame.empty:
        raise UserError(f"{name} has a header but no rows")
    _check_unique_columns([str(c) for c in frame.columns], name)


def trim_heap() -> None:
    """Asks Arrow's memory pool (when Arrow is in use) and glibc's malloc to return the free
    pages they keep for reuse to the system. Cheap: no garbage collection."""
    import sys

    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        _libc().malloc_trim(0)


@functools.cache
def _libc() -> Any:
    import ctypes

    return ctypes.CDLL("libc.so.6")


def release_memory() -> None:
    """Hands memory freed after a large read back to the system.

    Collects pandas' reference cycles, then asks Arrow's pool and glibc's malloc to return the
    pages they keep for reuse: a step reads its data once, and without this a freed table of
    strings stays in the step's resident memory (1.7 GB of 2 GB at two million CSV rows).
    """
    import gc

    import pyarrow  # noqa: F401 - so that trim_heap releases its pool too

    gc.collect()
    trim_heap()


def _check_unique_columns(columns: list[str], name: str) -> None:
    duplicated = sorted({c for c in columns if columns.count(c) > 1})
    if duplicated:
        raise UserError(f"{name} has duplicate column names: {duplicated[:5]}")


def _read_json(path: Path) -> Any:
    import pandas as pd

    first = _first_json_record(path)
    try:
        if not first:
            return pd.read_json(path, orient="records")
        return pd.read_json(path, lines=True, dtype=False)
    except ValueError:
        pass
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path.name} line {number} is not valid JSON") from None
            if not isinstance(record, dict):
                raise UserError(f"{path.name} line {number} is not a JSON object")
    raise UserError(f"cannot read {path.name} as JSON Lines")


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Reads the `x` and `y` arrays of a NumPy .npz file.

    Raises:
        UserError: when the file is not an .npz archive, lacks x or y, holds pickled objects or
            x and y differ in length.
    """
    import zipfile

    if not zipfile.is_zipfile(path):
        raise UserError(f"{path.name} is not a readable NumPy .npz file")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise UserError(
                    f"{path.name} must hold arrays 'x' and 'y' (found: {sorted(data.files)})"
                )
            x, y = data["x"], data["y"]
    except (zipfile.BadZipFile, OSError, EOFError):
        raise UserError(f"{path.name} is not a readable NumPy .npz file") from None
    except ValueError:
        raise UserError(
            f"{path.name} holds object arrays; save plain numeric or text arrays"
        ) from None
    if len(x) != len(y):
        raise UserError(f"{path.name}: x has {len(x)} rows but y has {len(y)}")
    if len(x) == 0:
        raise UserError(f"{path.name} holds no rows")
    if y.ndim > 2 or x.ndim < 1:
        raise UserError(f"{path.name}: 'y' must hold one label per row, not shape {y.shape}")
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=1)  # one-hot labels
    return x, y.reshape(len(y))
