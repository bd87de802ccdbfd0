"""Ingest and clean: read the source, validate it, fix what can be fixed, count every change.

Reading and modality inference live in kerasflow.data.sources, the cleaning policies in
kerasflow.data.cleaning, schemas and anomaly checks in kerasflow.data.schema, profiles in
kerasflow.data.profile. This step strings them together: read, coerce types, validate against a
saved schema when one is given (anomalies stop the run before any training), clean, check the
label, infer the schema of this data, write the bundle, the Markdown report, the schema and the
profile, and log all of it to MLflow.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts, choices, cleaning, profile
from kerasflow.data import schema as schemas
from kerasflow.data.readers import release_memory, trim_heap
from kerasflow.data.sources import RawData, read_source
from kerasflow.runtime import boundary, markdown
from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import write_bytes_atomic
from kerasflow.settings import IngestSettings
from kerasflow.tracking import datasets, lineage, runs

STEP = "ingest_clean"
MAX_CLASSES_FOR_INFERENCE = 20
MIN_ROWS = 10
# Options the step resolves (inferred when empty): logged once, with the resolved value.
_RESOLVED = (C.META_TASK, C.META_MODALITY)


def cleaning_policy(settings: IngestSettings) -> cleaning.CleaningPolicy:
    """The cleaning policy the step's settings describe."""
    return cleaning.CleaningPolicy(
        missing=settings.missing_values,
        outliers=settings.outliers,
        outlier_action=settings.outlier_action,
        drop_duplicates=settings.drop_duplicates,
        drop_id_columns=settings.drop_id_columns,
        keep_columns=tuple(c for c in (settings.time_column,) if c),
    )


@dataclass
class IngestReport:
    """What the step found and did: cleaning counts, warnings, schema and its validation."""

    cleaning: cleaning.CleaningReport
    schema: dict
    validated_against: str = ""
    class_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ingest_report.json artifact)."""
        return {
            **self.cleaning.as_dict(),
            "validated_against": self.validated_against,
            "class_counts": self.class_counts,
            "warnings": self.warnings,
        }


class AnomalyError(UserError):
    """New data do not match the saved schema."""

    def __init__(self, anomalies: list[schemas.Anomaly], source: str) -> None:
        super().__init__(
            schemas.describe_anomalies(anomalies, f"{source} against the saved schema")
        )
        self.anomalies = anomalies


def infer_task(raw: RawData, values: np.ndarray) -> str:
    """Classification for non-numeric labels or few distinct integers, else regression."""
    if raw.task_hint:
        return raw.task_hint
    import pandas as pd

    series = pd.Series(values)
    if not pd.api.types.is_numeric_dtype(series):
        numbers = pd.to_numeric(series.dropna(), errors="coerce")
        if numbers.isna().any() or numbers.empty:
            return "classification"
        series = numbers
    distinct = series.nunique(dropna=True)
    is_integral = bool(np.all(np.mod(series.dropna().to_numpy(dtype=float), 1) == 0))
    if is_integral and distinct <= MAX_CLASSES_FOR_INFERENCE:
        return "classification"
    return "regression"


def _check_rows(n: int, counts: dict[str, int] | None, min_class_rows: int) -> None:
    if n < MIN_ROWS:
        raise UserError(f"too few rows after cleaning ({n}); at least {MIN_ROWS} are needed")
    if counts is not None:
        schemas.raise_anomalies(schemas.check_labels(counts, min_class_rows))


def _class_counts(y: np.ndarray, names: list[str]) -> dict[str, int]:
    counts = np.bincount(y.astype(int), minlength=len(names))
    return {name: int(c) for name, c in zip(names, counts, strict=True) if c}


def build_bundle(
    raw: RawData,
    task: str = "",
    modality: str = "",
    options: IngestSettings | None = None,
    saved_schema: dict | None = None,
) -> tuple[artifacts.Bundle, IngestReport]:
    """Turns raw data into a clean bundle and a report.

    Raises:
        AnomalyError: when `saved_schema` is given and the data do not conform.
        UserError: unusable label, too few rows or classes, no feature left.
    """
    options = options or IngestSettings()
    task = task or options.task
    modality = modality or options.modality or raw.modality
    if raw.x is not None:
        return _image_bundle(raw, task, options, saved_schema)
    return _table_bundle(raw, task, modality, options, saved_schema)


def _image_bundle(raw, task, options, saved_schema):
    if task == "regression" and raw.task_hint == "classification":
        raise UserError("image class folders hold classes; task 'regression' does not fit them")
    task = task or raw.task_hint or infer_task(raw, raw.y)
    report = cleaning.CleaningReport(rows_in=len(raw.x))
    x, y = raw.x, raw.y
    if task == "classification" and not raw.class_names:
        values = np.unique(y)
        raw.class_names = [str(int(v)) if float(v).is_integer() else str(v) for v in values]
        y = np.searchsorted(values, y)
    if saved_schema is not None:
        anomalies = schemas.validate_images(saved_schema, x, raw.class_names)
        if anomalies:
            raise AnomalyError(anomalies, "the images")
    if options.drop_duplicates:
        keep, report.duplicate_rows = cleaning.dedupe_arrays(x, y)
        if report.duplicate_rows:
            x, y = x[keep], y[keep]
    report.rows_out = len(x)
    counts = _class_counts(y, raw.class_names) if task == "classification" else None
    _check_rows(len(x), counts, options.min_class_rows)
    meta = {
        C.META_MODALITY: "image",
        C.META_TASK: task,
        C.META_LABEL: raw.label,
        C.META_FEATURES: [{"name": C.IMAGE_INPUT, "input": C.IMAGE_INPUT, "kind": "image"}],
        C.META_CLASS_NAMES: raw.class_names if task == "classification" else [],
        C.META_IMAGE_SHAPE: list(x.shape[1:]),
        C.META_ROWS: len(x),
    }
    part = artifacts.Part(
        x=x.astype("float32", copy=False), y=y if task == "classification" else y.astype(float)
    )
    meta[C.META_DATA_HASH] = artifacts.hash_part(part)
    schema = schemas.infer_array_schema(
        x, meta[C.META_CLASS_NAMES], raw.label, options.min_class_rows
    )
    result = IngestReport(report, schema, class_counts=counts or {}, warnings=list(raw.warnings))
    return artifacts.Bundle(meta=meta, parts={"data": part}), result


def _table_bundle(raw, task, modality, options, saved_schema):
    import pandas as pd

    label = raw.label
    report = cleaning.CleaningReport(rows_in=len(raw.frame))
    text_column = raw.text_column if modality == "text" else ""
    if raw.junk_values is not None:  # coerced as it was read
        coerced = raw.frame
        report.junk_values.update(raw.junk_values)
    else:
        # A table's strings as read are coerced column by column in place: they are the
        # largest thing the step holds. Text keeps them for clean_text.
        coerced = cleaning.coerce_types(raw.frame, report, inplace=not text_column)
    release_memory()
    task = task or infer_task(raw, coerced[label].to_numpy())
    if saved_schema is not None:
        anomalies = schemas.validate_table(saved_schema, coerced)
        if anomalies:
            raise AnomalyError(anomalies, "the data")
    if task == "classification":
        # One class is the first thing to say about such data, before any column is judged.
        labels = coerced[label].dropna().astype(str).value_counts()
        if len(labels) == 1:
            schemas.raise_anomalies(schemas.check_labels(labels.to_dict(), 1))
    policy = cleaning_policy(options)
    if text_column:
        frame, report = cleaning.clean_text(raw.frame, label, text_column, policy, report)
    else:
        frame, report = cleaning.clean_table(coerced, label, task, policy, report, coerced=True)
    class_names: list[str] = []
    counts = None
    if task == "classification":
        values = frame[label]
        if pd.api.types.is_numeric_dtype(values) and values.mod(1).eq(0).all():
            values = values.astype("int64")
        # Each distinct label is named once; the rows keep codes into them.
        codes, uniques = pd.factorize(values, use_na_sentinel=False)
        names = [str(v) for v in uniques]
        class_names = list(raw.class_names) or sorted(set(names), key=_natural_key)
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise UserError(f"labels {unknown[:3]} are not among the classes {class_names[:5]}")
        index = {name: i for i, name in enumerate(class_names)}
        frame[label] = np.asarray([index[n] for n in names], dtype="int64")[codes]
        counts = _class_counts(frame[label].to_numpy(), class_names)
    else:
        frame[label] = frame[label].astype("float64")
    _check_rows(len(frame), counts, options.min_class_rows)
    features = []
    for col in frame.columns:
        if col == label or col == options.time_column:
            continue
        if col == text_column:
            features.append({"name": col, "input": C.TEXT_INPUT, "kind": "text"})
            continue
        kind = "numeric" if pd.api.types.is_numeric_dtype(frame[col]) else "categorical"
        features.append({"name": col, "input": artifacts.input_name(col), "kind": kind})
    _check_unique_inputs(features)
    meta = {
        C.META_MODALITY: "text" if text_column else "tabular",
        C.META_TASK: task,
        C.META_LABEL: label,
        C.META_FEATURES: features,
        C.META_CLASS_NAMES: class_names,
        C.META_ROWS: len(frame),
    }
    if options.time_column:
        meta["time_column"] = options.time_column
    if not text_column:
        # Outliers and missing values are handled after the split, fitted on train.
        meta[C.META_CLEANING] = cleaning.policy_dict(policy)
    part = artifacts.Part(frame=frame)
    meta[C.META_DATA_HASH] = artifacts.hash_part(part)
    schema = schemas.infer_table_schema(
        coerced,
        label,
        task,
        ignored=report.columns_removed,
        class_names=class_names,
        text_column=text_column,
        max_missing_share=options.max_missing_share,
        max_anomaly_share=options.max_anomaly_share,
        min_class_rows=options.min_class_rows,
    )
    result = IngestReport(
        report, schema, class_counts=counts or {}, warnings=list(raw.warnings + report.warnings)
    )
    return artifacts.Bundle(meta=meta, parts={"data": part}), result


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


def render_report(source: str, meta: dict, report: IngestReport) -> str:
    """The Markdown report of what the step found and changed."""
    c = report.cleaning
    lines = [
        f"# Ingest and clean: `{source}`",
        "",
        f"modality **{meta[C.META_MODALITY]}**, task **{meta[C.META_TASK]}**, "
        f"label `{meta[C.META_LABEL]}`",
        "",
    ]
    lines += markdown.table(("change", "count"), list(c.metrics().items()))
    if report.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    if report.class_counts:
        lines += ["", "## Rows per class", ""]
        lines += markdown.table(("class", "rows"), list(report.class_counts.items()))
    sections = (
        ("Junk strings made missing", ("column", "values"), list(c.junk_values.items())),
        (
            "Missing values (imputed after the split, with statistics of the train split)",
            ("column", "values"),
            list(c.missing.items()),
        ),
        ("Columns removed", ("column", "reason"), list(c.columns_removed.items())),
    )
    for title, header, rows in sections:
        if rows:
            lines += ["", f"## {title}", ""] + markdown.table(header, rows)
    lines += ["", "## Schema", ""]
    if report.validated_against:
        lines.append(f"The data conform to the saved schema `{report.validated_against}`.")
    else:
        lines.append("No saved schema was given: the schema of this data was inferred.")
    return "\n".join(lines) + "\n"


def _write_text(path: str, text: str) -> None:
    if path:
        write_bytes_atomic(path, text.encode())


def _log_failure(exc: AnomalyError) -> None:
    runs.log_text_artifact(schemas.render_anomalies(exc.anomalies), "anomalies.md")
    runs.log_dict_artifact([dataclasses.asdict(a) for a in exc.anomalies], "anomalies.json")


def _profile(result: artifacts.Bundle) -> tuple[list[dict], Any]:
    meta, part = result.meta, result.parts["data"]
    if part.frame is None:
        names = meta[C.META_CLASS_NAMES] or ["all"]
        y = part.y if meta[C.META_CLASS_NAMES] else np.zeros(len(part.y), int)
        stats = [{"image_shape": "x".join(map(str, meta[C.META_IMAGE_SHAPE])), "rows": len(part)}]
        return stats, profile.image_figure(part.x, y, names)
    frame = part.frame.copy(deep=False)  # the label column is replaced, not written into
    if meta[C.META_CLASS_NAMES]:
        names = np.asarray(meta[C.META_CLASS_NAMES], dtype=object)
        frame[meta[C.META_LABEL]] = names[frame[meta[C.META_LABEL]].to_numpy()]
    text = [f["name"] for f in meta[C.META_FEATURES] if f["kind"] == "text"]
    stats = profile.column_stats(frame)
    if text:
        lengths = frame[text[0]].str.split().str.len()
        for row in stats:
            if row["column"] == text[0]:
                row.update(profile.text_stats(frame[text[0]]))
        frame = frame.drop(columns=text).assign(**{f"{text[0]} (words)": lengths})
    return stats, profile.table_figure(frame, meta[C.META_LABEL])


def data_digest(opts: IngestSettings) -> str:
    """The content digest the step would record for the data `opts` name (read and cleaned
    as the step does), without writing or logging anything."""
    saved = schemas.load_schema(opts.schema) if opts.schema else None
    size = choices.parse_image_size(opts.image_size)
    if size is None and saved and saved.get("modality") == "image":
        size = tuple(saved["image_shape"][:2])
    raw = read_source(
        opts.data,
        opts.label,
        modality=opts.modality,
        text_column=opts.text_column,
        time_column=opts.time_column,
        image_size=size,
        coerce=True,
    )
    result, _ = build_bundle(raw, options=opts, saved_schema=saved)
    return result.meta[C.META_DATA_HASH]


@boundary.step_entry(STEP)
def run(
    *,
    settings: IngestSettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    dataset_dir: str,
    report_path: str,
    schema_dir: str = "",
    profile_path: str = "",
) -> str:
    """Runs the step; returns the MLflow run id of the pipeline run (found or created).

    Args:
        settings: The step's settings (a mapping is validated into IngestSettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        tracking_uri: MLflow tracking URI ("" for MLFLOW_TRACKING_URI).
        experiment: MLflow experiment of the pipeline run.
        kfp_run_id: The KFP run id the pipeline's MLflow run is found or created from.
        dataset_dir: Output folder of the clean data.
        report_path: Output Markdown report.
        schema_dir: Output folder of the inferred schema ("" for none).
        profile_path: Output HTML profile ("" for none).
    """
    opts = IngestSettings.from_parameters(settings, headline)
    source, label = opts.data, opts.label
    tracking_uri = runs.resolve_uri(tracking_uri)
    parent = runs.find_or_create_pipeline_run(tracking_uri, experiment, kfp_run_id)
    with runs.step_run(tracking_uri, parent, STEP, settings=opts):
        logged = opts.model_dump(exclude={"data", "label", *_RESOLVED})
        runs.log_params({"data": source, "label": label, **logged}, parent_run_id=parent)
        saved = schemas.load_schema(opts.schema) if opts.schema else None
        size = choices.parse_image_size(opts.image_size)
        if size is None and saved and saved.get("modality") == "image":
            size = tuple(saved["image_shape"][:2])
        boundary.progress(STEP, f"reading {source}")
        raw = read_source(
            source,
            label,
            modality=opts.modality,
            text_column=opts.text_column,
            time_column=opts.time_column,
            image_size=size,
            coerce=True,
        )
        for warning in raw.warnings:
            boundary.progress(STEP, f"warning: {warning}")
        try:
            result, report = build_bundle(raw, options=opts, saved_schema=saved)
        except AnomalyError as exc:
            _log_failure(exc)
            raise
        del raw  # the table as read: the bundle holds what is kept of it
        trim_heap()
        result.meta[C.META_SOURCE] = source
        report.validated_against = opts.schema
        artifacts.save(dataset_dir, result)
        text = render_report(source, result.meta, report)
        _write_text(report_path, text)
        if schema_dir:
            schemas.save_schema(report.schema, str(Path(schema_dir, C.SCHEMA_FILE)))
        stats, fig = _profile(result)
        png = profile.figure_png(fig)
        page = profile.render_html(f"Profile of {source}", stats, png)
        _write_text(profile_path, page)
        import mlflow

        runs.log_params({k: result.meta[k] for k in _RESOLVED}, parent_run_id=parent)
        mlflow.log_metrics(report.cleaning.metrics())
        datasets.log_parts({"clean": result.parts["data"]}, result.meta, source)
        runs.log_text_artifact(text, "ingest_report.md")
        runs.log_dict_artifact(report.as_dict(), "ingest_report.json")
        runs.log_dict_artifact(report.schema, C.SCHEMA_FILE)
        runs.set_pipeline_tags(
            parent,
            {
                lineage.TAG_DATA_SOURCE: source,
                lineage.TAG_DATA_HASH: result.meta[C.META_DATA_HASH],
                lineage.TAG_SCHEMA_URI: f"runs:/{runs.active_run_id()}/{C.SCHEMA_FILE}",
            },
        )
        runs.log_text_artifact(page, "profile.html")
        runs.log_figure(fig, "profile.png")
        boundary.progress(
            STEP,
            f"{report.cleaning.rows_out} rows, {result.meta[C.META_MODALITY]} "
            f"{result.meta[C.META_TASK]}",
        )
    return parent
