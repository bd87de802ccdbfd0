"""Reading raw data from a source URI: scikit-learn's bundled sets, local files or gs://.

A source is a `builtin:NAME`, a table file (CSV/TSV, Parquet, JSON Lines), a NumPy `.npz` with
`x` and `y`, or a folder with one subfolder per class (images or .txt files), on local disk or
under `gs://bucket/...`. It is read into a `RawData` whose modality (tabular, image, text) and
task hint are inferred unless the caller fixes them. `check_source` does the cheap part of the
checks, so that the CLI can refuse bad input with one line before any step runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow.data import cleaning, readers
from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import check_uri, exists, is_remote, local_copy

BUILTINS = ("digits", "breast_cancer", "wine", "iris", "diabetes")
BUILTIN_PREFIX = "builtin:"
TABLE_SUFFIXES = readers.TABLE_SUFFIXES
# A string column reads as free text when its typical value has this many words and most
# values differ.
TEXT_MIN_WORDS = 4
TEXT_MIN_UNIQUE_SHARE = 0.5
# Only tables this narrow (text, label and an id or two) are taken for text data unasked: a
# wide table with a name or comment column is still tabular.
MAX_COLUMNS_OF_TEXT_TABLE = 4


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
    text_column: str = ""
    warnings: list[str] = field(default_factory=list)
    source_format: str = ""
    # Junk values per column when the table was coerced as it was read (None: not coerced).
    junk_values: dict[str, int] | None = None


def check_source(
    uri: str,
    label: str,
    *,
    text_column: str = "",
    time_column: str = "",
    schema: str = "",
    synonyms: str = "",
) -> None:
    """Validates that `uri` names data kerasflow can read, without reading it all.

    Also checks that the side files (a saved schema, a synonym map) exist.

    Raises:
        UserError: unknown builtin, missing file or object, unsupported or unreadable format,
            missing label, text or time column.
    """
    for name, path in (("schema", schema), ("synonyms", synonyms)):
        if path:
            _check_exists(path, f"{name} file")
    if uri.startswith(BUILTIN_PREFIX):
        _builtin_name(uri)
        return
    check_uri(uri)
    if is_remote(uri):
        _check_exists(uri, "data")
        return  # the ingest step reads the object itself
    path = Path(uri)
    if not path.exists():
        raise UserError(f"data not found: {uri}")
    if path.is_dir():
        from kerasflow.data.class_folders import folder_modality, list_classes

        folder_modality(list_classes(path))
        return
    kind = readers.file_format(path)
    if kind == "npz":
        readers.read_npz(path)
        return
    if not kind:
        raise UserError(f"unsupported data format: {uri} ({_FORMATS})")
    columns = readers.table_columns(path)
    if not label:
        raise UserError(f"--label is required for table data ({uri})")
    if columns:
        _check_columns(path.name, columns, label, text_column, time_column)


_FORMATS = "expected .csv/.tsv, .parquet, .jsonl, .npz or a folder with one subfolder per class"


def _check_exists(uri: str, what: str) -> None:
    if not is_remote(uri):
        if not Path(uri).exists():
            raise UserError(f"{what} not found: {uri}")
        return
    try:
        found = exists(uri)
    except UserError:
        raise
    except Exception:  # no credentials here: the step, which has them, checks again
        return
    if not found:
        raise UserError(f"{what} not found: {uri}")


def _check_columns(
    name: str, columns: list[str], label: str, text_column: str, time_column: str
) -> None:
    for role, column in (("label", label), ("text", text_column), ("time", time_column)):
        if column and column not in columns:
            hint = ""
            if len(columns) == 1:
                hint = "; only one column was found: is the delimiter one of , ; tab |?"
            raise UserError(
                f"{role} column '{column}' not found in {name} (columns: {columns[:8]}{hint})"
            )


def _builtin_name(uri: str) -> str:
    name = uri[len(BUILTIN_PREFIX) :]
    if name not in BUILTINS:
        raise UserError(f"unknown builtin dataset '{name}' (choose from {', '.join(BUILTINS)})")
    return name


def read_source(
    uri: str,
    label: str = "",
    *,
    modality: str = "",
    text_column: str = "",
    time_column: str = "",
    image_size: tuple[int, int] | None = None,
    coerce: bool = False,
) -> RawData:
    """Reads the data at `uri` and infers its modality unless `modality` is given.

    With `coerce`, delimited text that cannot be text data (more columns than a text table
    has, no text column named, modality not 'text') has its types coerced as it is read, a
    run of rows at a time (`cleaning.coerce_chunks`): its strings are never all held at once.

    Raises:
        UserError: when the source is missing, unreadable or lacks a named column.
    """
    if uri.startswith(BUILTIN_PREFIX):
        return _read_builtin(_builtin_name(uri))
    with local_copy(uri) as path:
        if path.is_dir():
            raw = _read_folder(path, image_size)
        else:
            kind = readers.file_format(path)
            if kind == "npz":
                raw = _read_npz(path, label)
            elif kind:
                coerce_runs = coerce and kind == "delimited" and not text_column
                coerce_runs = coerce_runs and modality != "text"
                raw = _read_table(path, label, text_column, time_column, coerce_runs)
            else:
                raise UserError(f"unsupported data format: {uri} ({_FORMATS})")
    return _apply_modality(raw, modality, text_column)


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
            source_format="builtin",
        )
    frame = bunch.frame.copy()
    if name == "diabetes":
        return RawData(frame=frame, label="target", task_hint="regression", source_format="builtin")
    names = [str(n) for n in bunch.target_names]
    frame["target"] = [names[i] for i in frame["target"]]
    return RawData(
        frame=frame,
        label="target",
        task_hint="classification",
        class_names=names,
        source_format="builtin",
    )


def _read_table(
    path: Path, label: str, text_column: str, time_column: str, coerce_runs: bool = False
) -> RawData:
    if not label:
        raise UserError(f"--label is required for table data ({path.name})")
    source_format = readers.file_format(path)
    if coerce_runs:
        columns = [str(c).strip() for c in readers.table_columns(path)]
        if len(columns) > MAX_COLUMNS_OF_TEXT_TABLE:
            _check_columns(path.name, columns, label, text_column, time_column)
            report = cleaning.CleaningReport()
            frame = cleaning.coerce_chunks(
                readers.read_delimited_runs(path),
                report,
                lambda names: readers.read_delimited_runs(path, names),
            )
            return RawData(
                frame=frame,
                label=label,
                source_format=source_format,
                junk_values=report.junk_values,
            )
    frame = readers.read_table(path)
    _check_columns(path.name, [str(c) for c in frame.columns], label, text_column, time_column)
    return RawData(frame=frame, label=label, source_format=source_format)


def _read_npz(path: Path, label: str) -> RawData:
    import pandas as pd

    x, y = readers.read_npz(path)
    label = label or "label"
    if x.dtype.kind in "US":
        if x.ndim != 1:
            raise UserError(f"{path.name}: text 'x' must be one string per row")
        frame = pd.DataFrame({"text": x.astype(str), label: y})
        return RawData(
            frame=frame, label=label, modality="text", text_column="text", source_format="npz"
        )
    if x.dtype.kind not in "biuf":
        raise UserError(f"{path.name}: 'x' must hold numbers or strings, not {x.dtype}")
    if x.ndim == 2:
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
        frame[label] = y
        return RawData(frame=frame, label=label, source_format="npz")
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4 or x.shape[-1] not in (1, 3, 4):
        raise UserError(
            f"{path.name}: 'x' of shape {x.shape} is neither a table (N, F) nor images "
            "(N, H, W) or (N, H, W, C) with 1, 3 or 4 channels"
        )
    if y.dtype.kind in "US":
        names = sorted({str(v) for v in y})
        index = {n: i for i, n in enumerate(names)}
        y = np.asarray([index[str(v)] for v in y], dtype="int64")
        return RawData(
            x=x[..., :3].astype("float32"),
            y=y,
            label=label,
            modality="image",
            task_hint="classification",
            class_names=names,
            source_format="npz",
        )
    return RawData(
        x=x[..., :3].astype("float32"), y=y, label=label, modality="image", source_format="npz"
    )


def _read_folder(path: Path, image_size: tuple[int, int] | None) -> RawData:
    import pandas as pd

    from kerasflow.data.class_folders import read_class_folder

    data = read_class_folder(path, image_size)
    if data.x is not None:
        return RawData(
            x=data.x,
            y=data.y,
            label="class",
            modality="image",
            task_hint="classification",
            class_names=data.class_names,
            warnings=data.warnings,
            source_format="image_folder",
        )
    labels = [data.class_names[i] for i in data.y]
    return RawData(
        frame=pd.DataFrame({"text": data.texts, "class": labels}),
        label="class",
        modality="text",
        task_hint="classification",
        class_names=data.class_names,
        text_column="text",
        warnings=data.warnings,
        source_format="text_folder",
    )


def find_text_column(frame: Any, label: str) -> str:
    """The free-text column of a table ('' when none): many words per value, mostly unique."""
    best, best_words = "", 0.0
    for col in frame.columns:
        if col == label:
            continue
        values = frame[col].dropna()
        if values.empty or not all(isinstance(v, str) for v in values.iloc[:100]):
            continue
        values = values.astype(str)
        words = float(values.str.split().str.len().median())
        unique = values.nunique() / len(values)
        if words >= TEXT_MIN_WORDS and unique >= TEXT_MIN_UNIQUE_SHARE and words > best_words:
            best, best_words = str(col), words
    return best


def _apply_modality(raw: RawData, modality: str, text_column: str) -> RawData:
    if raw.x is not None:
        if modality and modality != "image":
            raise UserError(f"the data are images; modality '{modality}' does not fit them")
        return raw
    if raw.modality == "text" and modality in ("", "text"):
        return raw
    column = text_column or raw.text_column
    if modality == "tabular":
        raw.modality, raw.text_column = "tabular", ""
        return raw
    if modality == "image":
        raise UserError("the data are a table; modality 'image' needs image files or arrays")
    if not column and len(raw.frame.columns) <= MAX_COLUMNS_OF_TEXT_TABLE:
        column = find_text_column(raw.frame, raw.label)
    if modality == "text" and not column:
        raise UserError(
            "modality 'text' needs a text column: none found, name it with --text-column"
        )
    if column:
        raw.modality, raw.text_column = "text", column
    return raw
