"""Ingest and clean: read the source, fix what can be fixed, count every change.

Tables: rows without a label are dropped, duplicate rows dropped, junk strings in numeric
columns turned into missing values, missing numeric values imputed with the median and missing
categories with the most frequent value, constant columns removed. Images: duplicates dropped.
The result is a bundle (see kerasflow.bundle) plus a Markdown report of what changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kerasflow import bundle, stepio, tracking
from kerasflow import constants as C
from kerasflow.errors import UserError
from kerasflow.sources import RawData, read_source

STEP = "ingest_clean"
JUNK = {"", "?", "na", "n/a", "nan", "null", "none", "-", "--", "missing"}
MAX_CLASSES_FOR_INFERENCE = 20


def infer_task(raw: RawData, values: np.ndarray) -> str:
    """Classification for non-numeric labels or few distinct integers, else regression."""
    if raw.task_hint:
        return raw.task_hint
    import pandas as pd

    series = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(series):
        return "classification"
    distinct = series.nunique(dropna=True)
    is_integral = bool(np.all(np.mod(series.dropna().to_numpy(dtype=float), 1) == 0))
    if is_integral and distinct <= MAX_CLASSES_FOR_INFERENCE:
        return "classification"
    return "regression"


def _coerce_numeric(frame, report: dict) -> None:
    """Turns columns that are numbers apart from junk strings ('n/a', '?') into numbers."""
    import pandas as pd

    for col in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[col]):
            continue
        text = frame[col].astype("string").str.strip()
        is_junk = text.isna() | text.str.lower().isin(JUNK)
        numbers = pd.to_numeric(text.where(~is_junk), errors="coerce")
        convertible = numbers.notna() | is_junk
        if convertible.all() and numbers.notna().any():
            junk_count = int((is_junk & frame[col].notna()).sum())
            frame[col] = numbers.astype("float64")
            if junk_count:
                report["junk_values"][col] = junk_count


def clean_table(raw: RawData, task: str) -> tuple[object, dict]:
    """Cleans a table; returns the clean frame and a report of every change."""
    import pandas as pd

    frame = raw.frame.copy()
    label = raw.label
    report: dict = {
        "rows_in": len(frame),
        "junk_values": {},
        "imputed": {},
        "columns_removed": {},
    }
    _coerce_numeric(frame, report)
    features = [c for c in frame.columns if c != label]
    missing_label = frame[label].isna()
    if task == "classification":
        missing_label |= frame[label].astype("string").str.strip().str.lower().isin(JUNK)
    report["rows_without_label"] = int(missing_label.sum())
    frame = frame[~missing_label]
    before = len(frame)
    frame = frame.drop_duplicates()
    report["duplicate_rows"] = before - len(frame)
    for col in features:
        series = frame[col]
        if series.isna().all():
            report["columns_removed"][col] = "empty"
        elif series.nunique(dropna=True) <= 1:
            report["columns_removed"][col] = "constant"
    frame = frame.drop(columns=list(report["columns_removed"]))
    features = [c for c in frame.columns if c != label]
    if not features:
        raise UserError("no usable feature columns left after cleaning")
    for col in features:
        missing = int(frame[col].isna().sum())
        if not missing:
            continue
        if pd.api.types.is_numeric_dtype(frame[col]):
            frame[col] = frame[col].fillna(frame[col].median())
            report["imputed"][col] = {"count": missing, "strategy": "median"}
        else:
            frame[col] = frame[col].fillna(frame[col].mode(dropna=True).iloc[0])
            report["imputed"][col] = {"count": missing, "strategy": "most_frequent"}
    report["rows_out"] = len(frame)
    return frame.reset_index(drop=True), report


def _check_rows(n: int, task: str, labels: np.ndarray) -> None:
    if n < 10:
        raise UserError(f"too few rows after cleaning ({n}); at least 10 are needed")
    if task == "classification":
        _, counts = np.unique(labels, return_counts=True)
        if len(counts) < 2:
            raise UserError("the label has only one class; classification needs at least two")
        if counts.min() < 3:
            raise UserError(f"a class has only {counts.min()} row(s); each needs at least 3")


def build_bundle(raw: RawData, task: str = "", modality: str = "") -> tuple[bundle.Bundle, dict]:
    """Turns raw data into a clean bundle and a change report."""
    modality = modality or raw.modality
    if raw.x is not None:
        task = task or raw.task_hint or "classification"
        flat = raw.x.reshape(len(raw.x), -1)
        _, first = np.unique(
            np.concatenate([flat, raw.y[:, None]], axis=1), axis=0, return_index=True
        )
        keep = np.sort(first)
        report = {
            "rows_in": len(raw.x),
            "duplicate_rows": len(raw.x) - len(keep),
            "rows_out": len(keep),
            "imputed": {},
            "columns_removed": {},
            "junk_values": {},
        }
        x, y = raw.x[keep], raw.y[keep]
        _check_rows(len(y), task, y)
        meta = {
            C.META_MODALITY: modality,
            C.META_TASK: task,
            C.META_LABEL: raw.label,
            C.META_FEATURES: [{"name": C.IMAGE_INPUT, "input": C.IMAGE_INPUT, "kind": "image"}],
            C.META_CLASS_NAMES: raw.class_names or [str(i) for i in np.unique(y)],
            C.META_IMAGE_SHAPE: list(x.shape[1:]),
            C.META_ROWS: len(y),
        }
        part = bundle.Part(x=x.astype("float32"), y=y)
        meta[C.META_DATA_HASH] = bundle.hash_part(part)
        return bundle.Bundle(meta=meta, parts={"data": part}), report
    import pandas as pd

    task = task or infer_task(raw, raw.frame[raw.label].to_numpy())
    frame, report = clean_table(raw, task)
    label = raw.label
    class_names: list[str] = []
    if task == "classification":
        values = frame[label]
        if pd.api.types.is_numeric_dtype(values) and values.dropna().mod(1).eq(0).all():
            values = values.astype("int64")
        class_names = raw.class_names or sorted({str(v) for v in values}, key=_natural_key)
        index = {name: i for i, name in enumerate(class_names)}
        frame[label] = [index[str(v)] for v in values]
    else:
        numeric = pd.to_numeric(frame[label], errors="coerce")
        if numeric.isna().any():
            raise UserError(f"regression label '{label}' holds values that are not numbers")
        frame[label] = numeric.astype("float64")
    _check_rows(len(frame), task, frame[label].to_numpy())
    features = []
    for col in frame.columns:
        if col == label:
            continue
        kind = "numeric" if pd.api.types.is_numeric_dtype(frame[col]) else "categorical"
        if kind == "categorical":
            frame[col] = frame[col].astype(str)
        features.append({"name": col, "input": bundle.input_name(col), "kind": kind})
    _check_unique_inputs(features)
    meta = {
        C.META_MODALITY: modality or "tabular",
        C.META_TASK: task,
        C.META_LABEL: label,
        C.META_FEATURES: features,
        C.META_CLASS_NAMES: class_names,
        C.META_ROWS: len(frame),
    }
    part = bundle.Part(frame=frame)
    meta[C.META_DATA_HASH] = bundle.hash_part(part)
    return bundle.Bundle(meta=meta, parts={"data": part}), report


def _natural_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _check_unique_inputs(features: list[dict]) -> None:
    seen: dict[str, str] = {}
    for feat in features:
        if feat["input"] in seen:
            feat["input"] = f"{feat['input']}_{len(seen)}"
        seen[feat["input"]] = feat["name"]


def render_report(source: str, meta: dict, report: dict) -> str:
    """The Markdown report of what cleaning changed."""
    lines = [
        f"# Ingest and clean: `{source}`",
        "",
        f"- modality: **{meta[C.META_MODALITY]}**, task: **{meta[C.META_TASK]}**",
        f"- rows in: {report['rows_in']}, rows out: {report['rows_out']}",
        f"- rows dropped without a label: {report.get('rows_without_label', 0)}",
        f"- duplicate rows dropped: {report['duplicate_rows']}",
    ]
    if meta.get(C.META_CLASS_NAMES):
        lines.append(f"- classes: {', '.join(meta[C.META_CLASS_NAMES])}")
    for title, key in (
        ("Junk strings made missing", "junk_values"),
        ("Values imputed", "imputed"),
        ("Columns removed", "columns_removed"),
    ):
        if report[key]:
            lines += ["", f"## {title}", "", "| column | detail |", "| --- | --- |"]
            lines += [f"| {col} | {detail} |" for col, detail in report[key].items()]
    return "\n".join(lines) + "\n"


@stepio.step_entry(STEP)
def run(
    source: str,
    label: str,
    task: str,
    modality: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    dataset_dir: str,
    report_path: str,
) -> str:
    """Runs the step; returns the MLflow run id of the pipeline run (found or created)."""
    tracking_uri = tracking.resolve_uri(tracking_uri)
    parent = tracking.find_or_create_pipeline_run(tracking_uri, experiment, kfp_run_id)
    with tracking.step_run(tracking_uri, parent, STEP):
        stepio.progress(STEP, f"reading {source}")
        raw = read_source(source, label)
        result, report = build_bundle(raw, task, modality)
        bundle.save(dataset_dir, result)
        text = render_report(source, result.meta, report)
        Path(report_path).parent.mkdir(parents=True, exist_ok=True)
        Path(report_path).write_text(text)
        tracking.log_params(
            {
                "data": source,
                "label": label,
                "task": result.meta[C.META_TASK],
                "modality": result.meta[C.META_MODALITY],
            },
            parent_run_id=parent,
        )
        import mlflow

        mlflow.log_metrics(
            {
                "rows_in": report["rows_in"],
                "rows_out": report["rows_out"],
                "duplicate_rows": report["duplicate_rows"],
                "values_imputed": sum(v["count"] for v in report["imputed"].values()),
                "columns_removed": len(report["columns_removed"]),
            }
        )
        tracking.log_text_artifact(text, "ingest_report.md")
        tracking.log_dict_artifact(report, "ingest_report.json")
        stepio.progress(STEP, f"{report['rows_out']} rows, task {result.meta[C.META_TASK]}")
    return parent
