"""Data schemas: inferred from training data, saved as JSON, checked against new data.

A schema records what the data looked like when a model was trained: each column's type,
range (numbers) or categories (text), its share of missing values and the limits a later batch
may reach, the label's classes, or for images their shape and classes. On retraining, new data
are validated against the saved schema before any cleaning or training; every anomaly (missing
or new column, changed type, values out of the training range, new categories, too many
missing values, new or too few classes) is named. Table checks run through pandera.
The file is plain JSON, meant to be read and, where a limit is too strict, edited.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kerasflow.constants import SCHEMA_FILE
from kerasflow.runtime.errors import UserError

SCHEMA_VERSION = 1
# Above this many distinct values a text column is free text: no category check.
MAX_CATEGORIES = 1000
MAX_NAMED_VALUES = 3


@dataclass
class Anomaly:
    """One way new data differ from the schema."""

    column: str
    kind: str
    message: str


def _limits(missing_share: float, max_missing_share: float) -> float:
    # A column that was already often missing may stay so: its own share is its limit
    # (rounded up, so that the same data always pass).
    return math.ceil(max(max_missing_share, missing_share) * 1e6) / 1e6


def infer_table_schema(
    frame: Any,
    label: str,
    task: str,
    *,
    ignored: dict[str, str] | None = None,
    class_names: list[str] | None = None,
    text_column: str = "",
    max_missing_share: float = 0.3,
    max_anomaly_share: float = 0.01,
    min_class_rows: int = 3,
) -> dict:
    """The schema of a table whose types were coerced (numbers are float, the rest text).

    Args:
        frame: the table before missing values are imputed or outliers handled.
        ignored: columns cleaning removed, with the reason; they may be absent later.
    """
    import pandas as pd

    ignored = ignored or {}
    columns: dict[str, dict] = {}
    for col in frame.columns:
        if col == label:
            continue
        series = frame[col]
        missing = float(series.isna().mean())
        spec: dict[str, Any] = {"missing_share": round(missing, 6)}
        if col in ignored:
            spec.update(role="ignored", reason=ignored[col])
        elif col == text_column:
            spec.update(role="text", type="text")
        else:
            spec["role"] = "feature"
            spec["max_missing_share"] = _limits(missing, max_missing_share)
            if pd.api.types.is_numeric_dtype(series):
                values = series.dropna()
                spec.update(type="numeric", min=float(values.min()), max=float(values.max()))
            else:
                distinct = sorted({str(v) for v in series.dropna()})
                spec["type"] = "categorical"
                if len(distinct) <= MAX_CATEGORIES:
                    spec["categories"] = distinct
        columns[str(col)] = spec
    label_spec: dict[str, Any] = {"name": label, "task": task}
    if task == "classification":
        label_spec["classes"] = list(class_names or [])
        label_spec["min_class_rows"] = int(min_class_rows)
    else:
        values = pd.to_numeric(frame[label], errors="coerce").dropna()
        label_spec.update(min=float(values.min()), max=float(values.max()))
    return {
        "version": SCHEMA_VERSION,
        "modality": "text" if text_column else "tabular",
        "rows": int(len(frame)),
        "max_anomaly_share": float(max_anomaly_share),
        "label": label_spec,
        "columns": columns,
    }


def infer_array_schema(
    x: np.ndarray, class_names: list[str], label: str, min_class_rows: int = 3
) -> dict:
    """The schema of image data: shape, pixel range and classes."""
    return {
        "version": SCHEMA_VERSION,
        "modality": "image",
        "rows": int(len(x)),
        "image_shape": [int(s) for s in x.shape[1:]],
        "pixel_range": [float(x.min()), float(x.max())],
        "label": {
            "name": label,
            "task": "classification",
            "classes": list(class_names),
            "min_class_rows": int(min_class_rows),
        },
    }


def save_schema(schema: dict, path: str) -> None:
    """Writes the schema as JSON (atomically)."""
    from kerasflow.runtime.fileio import write_json_atomic

    write_json_atomic(path, schema)


def load_schema(uri: str) -> dict:
    """Reads a saved schema from a local path or gs:// URI (a file, or a folder holding
    schema.json, as the ingest step's schema artifact is).

    Raises:
        UserError: when the file is missing or is not a kerasflow schema.
    """
    from kerasflow.runtime.fileio import local_copy

    try:
        with local_copy(uri) as path:
            if path.is_dir():
                path = path / SCHEMA_FILE
            schema = json.loads(path.read_text())
    except UserError:
        raise UserError(f"schema file not found: {uri}") from None
    except FileNotFoundError:
        raise UserError(f"schema file not found: {uri}/{SCHEMA_FILE}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
        raise UserError(f"schema file {uri} is not valid JSON") from None
    if not isinstance(schema, dict) or schema.get("version") != SCHEMA_VERSION:
        raise UserError(f"{uri} is not a kerasflow schema (version {SCHEMA_VERSION})")
    return schema


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def _pandera_schema(schema: dict) -> Any:
    import pandera.pandas as pa

    columns: dict[str, Any] = {}
    for name, spec in schema["columns"].items():
        if spec["role"] != "feature":
            columns[name] = pa.Column(nullable=True, required=spec["role"] == "text")
            continue
        limit = spec["max_missing_share"]
        checks = [
            pa.Check(
                lambda s, limit=limit: bool(s.isna().mean() <= limit),
                ignore_na=False,
                name="max_missing_share",
            )
        ]
        if spec["type"] == "numeric":
            checks.append(pa.Check.in_range(spec["min"], spec["max"]))
            columns[name] = pa.Column("float64", checks, nullable=True)
        else:
            if "categories" in spec:
                domain = set(spec["categories"])
                checks.append(
                    pa.Check(lambda s, domain=domain: s.astype(str).isin(domain), name="domain")
                )
            columns[name] = pa.Column(checks=checks, nullable=True)
    label = schema["label"]
    label_checks = []
    if label["task"] == "classification":
        classes = set(label["classes"])
        label_checks.append(
            pa.Check(lambda s, c=classes: s.astype(str).isin(c), name="label_classes")
        )
    columns[label["name"]] = pa.Column(checks=label_checks, nullable=True)
    return pa.DataFrameSchema(columns, strict=True, name="kerasflow")


def validate_table(schema: dict, frame: Any) -> list[Anomaly]:
    """Anomalies of a coerced table against a saved table schema (empty when it conforms)."""
    import pandera.pandas as pa

    if schema.get("modality") == "image":
        return [Anomaly("", "modality", "the schema describes images but the data are a table")]
    try:
        _pandera_schema(schema).validate(frame, lazy=True)
        return []
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases
    limit = float(schema.get("max_anomaly_share", 0.0))
    label = schema["label"]["name"]
    out: list[Anomaly] = []
    for (column, check), group in cases.groupby(["column", "check"], dropna=False, sort=False):
        values = group["failure_case"].tolist()
        if check == "column_in_dataframe":
            out += [Anomaly(str(v), "missing_column", f"column '{v}' is missing") for v in values]
        elif check == "column_in_schema":
            out += [Anomaly(str(v), "new_column", f"column '{v}' is new") for v in values]
        elif str(check).startswith("dtype("):
            out.append(
                Anomaly(
                    column,
                    "type",
                    f"column '{column}' was numeric and now holds text such as {_examples(values)}",
                )
            )
        elif check == "max_missing_share":
            share = float(frame[column].isna().mean())
            spec = schema["columns"][column]
            out.append(
                Anomaly(
                    column,
                    "missing_share",
                    f"column '{column}' is {share:.1%} missing "
                    f"(limit {spec['max_missing_share']:.1%})",
                )
            )
        elif str(check).startswith("in_range("):
            share = _share(len(group), int(frame[column].notna().sum()))
            spec = schema["columns"][column]
            if share > limit:
                out.append(
                    Anomaly(
                        column,
                        "out_of_range",
                        f"column '{column}' has {share:.1%} of "
                        f"values outside the training range [{spec['min']:g}, "
                        f"{spec['max']:g}] (limit {limit:.1%})",
                    )
                )
        elif check == "domain":
            share = _share(len(group), int(frame[column].notna().sum()))
            if share > limit:
                out.append(
                    Anomaly(
                        column,
                        "new_category",
                        f"column '{column}' has new categories "
                        f"{_examples(values)} in {share:.1%} of rows (limit {limit:.1%})",
                    )
                )
        elif check == "label_classes" and column == label:
            out.append(
                Anomaly(
                    column,
                    "new_class",
                    f"label '{column}' has classes the schema does not know: {_examples(values)}",
                )
            )
        else:
            out.append(Anomaly(str(column), str(check), f"column '{column}' fails {check}"))
    # A column of the wrong type fails its other checks too: its type is the one news.
    retyped = {a.column for a in out if a.kind == "type"}
    return [a for a in out if a.kind == "type" or a.column not in retyped]


def _examples(values: list) -> str:
    distinct = list(dict.fromkeys(str(v) for v in values))
    shown = ", ".join(repr(v) for v in distinct[:MAX_NAMED_VALUES])
    more = (
        f" and {len(distinct) - MAX_NAMED_VALUES} more" if len(distinct) > MAX_NAMED_VALUES else ""
    )
    return f"({shown}{more})"


def validate_images(schema: dict, x: np.ndarray, class_names: list[str]) -> list[Anomaly]:
    """Anomalies of image arrays against a saved image schema."""
    if schema.get("modality") != "image":
        return [
            Anomaly(
                "",
                "modality",
                f"the schema describes {schema.get('modality')} data but the data are images",
            )
        ]
    out = []
    if list(x.shape[1:]) != schema["image_shape"]:
        out.append(
            Anomaly(
                "",
                "image_shape",
                f"images are {list(x.shape[1:])}, the schema expects {schema['image_shape']}",
            )
        )
    new = sorted(set(class_names) - set(schema["label"]["classes"]))
    if new:
        out.append(Anomaly("", "new_class", f"classes the schema does not know: {_examples(new)}"))
    return out


def check_labels(counts: dict[str, int], min_class_rows: int) -> list[Anomaly]:
    """Label anomalies of classification data: one class, or classes with too few rows."""
    if len(counts) < 2:
        only = next(iter(counts), "")
        return [
            Anomaly(
                "",
                "one_class",
                f"the label has only one class ('{only}'); classification needs at least two",
            )
        ]
    small = {c: n for c, n in counts.items() if n < min_class_rows}
    if small:
        shown = ", ".join(f"'{c}': {n}" for c, n in list(small.items())[:MAX_NAMED_VALUES])
        return [
            Anomaly(
                "",
                "class_rows",
                f"too few rows per class ({shown}); each class needs at least {min_class_rows}",
            )
        ]
    return []


def describe_anomalies(anomalies: list[Anomaly], what: str = "") -> str:
    """One line naming every anomaly: "WHAT: a" for one, "N anomalies in WHAT: a; b" for more."""
    if len(anomalies) == 1:
        return f"{what}: {anomalies[0].message}" if what else anomalies[0].message
    return f"{len(anomalies)} anomalies in {what or 'the data'}: " + "; ".join(
        a.message for a in anomalies
    )


def raise_anomalies(anomalies: list[Anomaly], what: str = "") -> None:
    """Raises one UserError naming every anomaly (no-op when there is none).

    Raises:
        UserError: with `describe_anomalies`' line.
    """
    if anomalies:
        raise UserError(describe_anomalies(anomalies, what))


def render_anomalies(anomalies: list[Anomaly]) -> str:
    """The anomalies as a Markdown table."""
    lines = ["| column | anomaly | detail |", "| --- | --- | --- |"]
    lines += [f"| {a.column or '-'} | {a.kind} | {a.message} |" for a in anomalies]
    return "\n".join(lines) + "\n"
