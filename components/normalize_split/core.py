"""Normalize and split: train/val/test split, then everything statistical fitted on train only.

Splits are seeded: stratified by class for classification, plain for regression, or ordered
by a time column (oldest rows train, newest test) on request; with `folds` the rows outside the
test split are also assigned to k folds (stratified when possible) for cross-validation.
Cleaning that needs statistics runs here, after the split: outlier bounds and imputation values
come from the train split and apply to every split (see kerasflow.data.cleaning.fit_on_train). The
statistics (z-score or min-max parameters of numeric inputs, vocabularies of categorical and
text inputs) go into the bundle metadata; the model builder turns them into Keras
preprocessing layers, so the exported model takes raw rows and training and serving share one
transformation. Class imbalance is handled with balanced class weights, or left to the augment
step's oversampling when `imbalance` is 'smote'.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts, cleaning, textprep
from kerasflow.data.readers import release_memory
from kerasflow.monitoring import reference
from kerasflow.runtime import boundary, markdown
from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import write_bytes_atomic, write_json_atomic
from kerasflow.settings import SplitSettings
from kerasflow.tracking import datasets, runs

STEP = "normalize_split"
MAX_VOCABULARY = 1000
# Values per block when scaling statistics are summed (8 MB of float64 temporaries).
STATS_BLOCK_VALUES = 1 << 20
# What the train-fitted cleaning changed, kept in the split bundle's metadata.
CLEANING_REPORT = "cleaning_report"


def split_indices(
    labels: np.ndarray,
    task: str,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    warnings: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """Seeded train/val/test row positions, stratified by label for classification.

    When a class is too small to appear in every split, the split falls back to a plain one
    and says so in `warnings`.
    """
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))

    def attempt(stratified: bool) -> dict[str, np.ndarray]:
        strat = labels if stratified else None
        rest, test = train_test_split(
            idx, test_size=test_fraction, random_state=seed, stratify=strat
        )
        train, val = train_test_split(
            rest,
            test_size=val_fraction / (1.0 - test_fraction),
            random_state=seed,
            stratify=labels[rest] if stratified else None,
        )
        return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}

    stratified = task == "classification"
    try:
        return attempt(stratified)
    except ValueError as exc:
        if not stratified:
            raise UserError(f"cannot split the data: {exc}") from None
    try:
        out = attempt(False)
    except ValueError as exc:
        raise UserError(f"cannot split the data: {exc}") from None
    if warnings is not None:
        warnings.append("classes too small to stratify: the split is not stratified")
    return out


def time_order(frame, column: str) -> tuple[np.ndarray, int]:
    """Row positions sorted by `column` (dates or numbers) and the count of rows without a time.

    Raises:
        UserError: when the column holds neither dates nor numbers.
    """
    import pandas as pd

    values = frame[column]
    if pd.api.types.is_numeric_dtype(values):
        keys = values.astype("float64")
    else:
        keys = pd.to_datetime(values, errors="coerce", format="mixed")
        if keys.notna().sum() < 0.9 * values.notna().sum() or keys.isna().all():
            raise UserError(f"time column '{column}' holds values that are not dates or numbers")
    keys = pd.Series(keys).reset_index(drop=True)
    valid = np.flatnonzero(keys.notna().to_numpy())
    order = valid[np.argsort(keys.iloc[valid].to_numpy(), kind="stable")]
    return order, len(keys) - len(valid)


def time_split(order: np.ndarray, val_fraction: float, test_fraction: float) -> dict:
    """Oldest rows train, then validation, newest rows test."""
    n = len(order)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction)))
    return {
        "train": order[: n - n_test - n_val],
        "val": order[n - n_test - n_val : n - n_test],
        "test": order[n - n_test :],
    }


def assign_folds(labels: np.ndarray, task: str, k: int, seed: int) -> np.ndarray:
    """A fold id (0..k-1) per row, stratified by class for classification when possible.

    Raises:
        UserError: when there are fewer rows than folds.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(labels) < k:
        raise UserError(f"cannot make {k} folds of {len(labels)} rows")
    ids = np.zeros(len(labels), dtype="int64")
    splitter = KFold(k, shuffle=True, random_state=seed)
    if task == "classification" and np.bincount(labels.astype(int)).max() >= k:
        counts = np.bincount(labels.astype(int))
        if counts[counts > 0].min() >= k:
            splitter = StratifiedKFold(k, shuffle=True, random_state=seed)
    for fold, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        ids[held] = fold
    return ids


def fit_normalization(meta: dict, train: artifacts.Part, scaling: str = "zscore") -> dict:
    """Statistics of the train split that the model's preprocessing layers are built from.

    Numeric inputs get `mean` and `variance` for a Keras Normalization layer: the column's
    mean and variance (z-score) or its minimum and squared range (min-max, which the same layer
    then maps onto 0..1), and `fill`, the value a missing number becomes. Categorical inputs
    get a vocabulary (most frequent first), text a vocabulary and a sequence length.
    """
    if train.frame is None:
        return {C.IMAGE_INPUT: _scale_stats(train.x, scaling)}
    stats: dict = {}
    for feat in meta[C.META_FEATURES]:
        col = train.frame[feat["name"]]
        if feat["kind"] == "numeric":
            values = col.to_numpy(dtype="float64")
            stats[feat["input"]] = _scale_stats(values, scaling)
            # The served model fills a missing value as training imputed it.
            fill = meta.get("fill_values", {}).get(feat["name"], float(values.mean()))
            stats[feat["input"]]["fill"] = fill
            if feat["name"] in meta.get("clip_bounds", {}):
                # Cleaning clipped this column; the model clips served values the same way.
                stats[feat["input"]]["clip"] = meta["clip_bounds"][feat["name"]]
        elif feat["kind"] == "text":
            vocabulary, length = textprep.fit_vocabulary(col.astype(str))
            if not vocabulary:
                raise UserError(f"text column '{feat['name']}' holds no words")
            stats[feat["input"]] = {"vocabulary": vocabulary, "sequence_length": length}
        else:
            counts = Counter(col.astype(str))
            ranked = sorted(counts, key=lambda v: (-counts[v], v))[:MAX_VOCABULARY]
            stats[feat["input"]] = {"vocabulary": ranked}
            if feat["name"] in meta.get("fill_values", {}):
                # Served junk or empty values become what training imputed.
                stats[feat["input"]]["fill"] = meta["fill_values"][feat["name"]]
    if meta[C.META_TASK] == "regression":
        y = train.labels(meta).astype("float64")
        stats["__target__"] = {"mean": float(y.mean()), "std": float(max(y.std(), 1e-6))}
    return stats


def _scale_stats(values: np.ndarray, scaling: str) -> dict:
    """Scaling statistics over every value of `values` (any shape), summed in float64 a block of
    rows at a time: a float64 copy of a whole image split would take twice its memory."""
    if scaling == "minmax":
        low, high = float(values.min()), float(values.max())
        return {
            "scaling": "minmax",
            "min": low,
            "max": high,
            "mean": low,
            "variance": float(max((high - low) ** 2, 1e-12)),
        }
    rows = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
    step = max(1, STATS_BLOCK_VALUES // max(1, rows.shape[1]))
    blocks = [rows[i : i + step] for i in range(0, len(rows), step)]
    mean = sum(np.sum(b, dtype=np.float64) for b in blocks) / rows.size
    variance = sum(np.sum(np.square(b.astype(np.float64) - mean)) for b in blocks) / rows.size
    return {"scaling": "zscore", "mean": float(mean), "variance": float(max(variance, 1e-12))}


def class_weights(meta: dict, train: artifacts.Part) -> dict[str, float]:
    """Balanced class weights (n / (k * count)) from the train split."""
    from sklearn.utils.class_weight import compute_class_weight

    y = train.labels(meta).astype("int64")
    classes = np.unique(y)
    weights = compute_class_weight("balanced", classes=classes, y=y)
    return {str(int(c)): float(w) for c, w in zip(classes, weights, strict=True)}


def split_bundle(
    data: artifacts.Bundle, settings: SplitSettings | None = None, consume: bool = False
) -> artifacts.Bundle:
    """Splits the one part of a clean bundle and fits the preprocessing statistics on train.

    With `consume`, the bundle's data part is dropped once split, so the whole data and its
    splits are never held together (the step does this; a caller that reuses `data` does not).
    """
    options = settings or SplitSettings()
    val_fraction, test_fraction, seed = options.val_fraction, options.test_fraction, options.seed
    meta = dict(data.meta)
    part = data.parts["data"]
    task = meta[C.META_TASK]
    warnings: list[str] = []
    time_column = options.time_column or meta.get("time_column", "")
    if time_column:
        if part.frame is None or time_column not in part.frame.columns:
            raise UserError(f"time column '{time_column}' not found in the clean data")
        order, untimed = time_order(part.frame, time_column)
        if untimed:
            warnings.append(f"dropped {untimed} row(s) without a time in '{time_column}'")
        rows = time_split(order, val_fraction, test_fraction)
        meta["split"] = {"strategy": "time", "column": time_column}
    else:
        rows = split_indices(part.labels(meta), task, val_fraction, test_fraction, seed, warnings)
        strategy = "stratified" if task == "classification" and not warnings else "random"
        meta["split"] = {"strategy": strategy}
    if options.folds:
        rows, meta["folds"] = _folds(part, meta, rows, int(options.folds), seed)
    if consume:
        parts = part.take_apart(rows)
        del part
        data.parts.pop("data")
        release_memory()
    else:
        parts = {name: part.take(r) for name, r in rows.items()}
    if time_column:
        parts = {
            n: artifacts.Part(frame=p.frame.drop(columns=[time_column])) for n, p in parts.items()
        }
    if C.META_CLEANING in meta:
        policy = cleaning.policy_from_dict(meta[C.META_CLEANING])
        frames, report, kept = cleaning.fit_on_train(
            {name: p.frame for name, p in parts.items()}, meta[C.META_FEATURES], policy, copy=False
        )
        parts = {name: artifacts.Part(frame=frame) for name, frame in frames.items()}
        if report.clip_bounds:
            meta["clip_bounds"] = report.clip_bounds
        meta["fill_values"] = report.fill_values
        if "folds" in meta and not kept.all():
            # Fold ids list the train rows, then the val rows: forget the dropped ones.
            ids = np.asarray(meta["folds"]["ids"])
            ids = np.concatenate([ids[: len(kept)][kept], ids[len(kept) :]])
            meta["folds"] = {**meta["folds"], "ids": ids.tolist()}
        meta[CLEANING_REPORT] = report.as_dict()
    meta[C.META_NORMALIZATION] = fit_normalization(meta, parts["train"], options.scaling)
    meta["scaling"] = options.scaling
    meta["imbalance"] = options.imbalance if task == "classification" else "none"
    if task == "classification" and options.imbalance == "class_weights":
        meta["class_weights"] = class_weights(meta, parts["train"])
    else:
        meta.pop("class_weights", None)
    meta["split_sizes"] = {name: len(p) for name, p in parts.items()}
    meta["split_warnings"] = warnings
    return artifacts.Bundle(meta=meta, parts=parts)


def _folds(part: artifacts.Part, meta: dict, rows: dict, k: int, seed: int) -> tuple[dict, dict]:
    """Fold 0 becomes the validation split; the ids of train+val rows go into the metadata."""
    pool = np.concatenate([rows["train"], rows["val"]])
    ids = assign_folds(part.labels(meta)[pool], meta[C.META_TASK], k, seed)
    train, val = pool[ids != 0], pool[ids == 0]
    fold_ids = np.concatenate([ids[ids != 0], ids[ids == 0]])
    return {"train": train, "val": val, "test": rows["test"]}, {"k": k, "ids": fold_ids.tolist()}


def render_report(meta: dict) -> str:
    """The Markdown report of the split and of the cleaning fitted on train."""
    lines = [f"# Normalize and split: {meta['split']['strategy']} split", ""]
    lines += markdown.table(("split", "rows"), list(meta["split_sizes"].items()))
    if meta["split_warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in meta["split_warnings"]]
    report = meta.get(CLEANING_REPORT)
    if not report:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## Cleaning fitted on the train split",
        "",
        "Outlier bounds and imputation statistics come from the train split alone and are "
        "applied to every split.",
    ]
    if report["rows_dropped_outliers"]:
        lines += ["", f"Train rows dropped as outliers: {report['rows_dropped_outliers']}"]
    if report["outliers"]:
        lines += [""] + markdown.table(
            ("column", "values", "rule", "bounds", "action"),
            [
                (k, v["count"], v["rule"], f"[{v['low']:g}, {v['high']:g}]", v["action"])
                for k, v in report["outliers"].items()
            ],
        )
    if report["imputed"]:
        lines += [""] + markdown.table(
            ("column", "values imputed", "strategy"),
            [(k, v["count"], v["strategy"]) for k, v in report["imputed"].items()],
        )
    return "\n".join(lines) + "\n"


@boundary.step_entry(STEP)
def run(
    *,
    settings: SplitSettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    dataset_dir: str,
    splits_dir: str,
    report_path: str,
    tracking_uri: str,
    parent_run_id: str,
) -> None:
    """Runs the step: reads the clean data, writes the split artifacts.

    Args:
        settings: The step's settings (a mapping is validated into SplitSettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        dataset_dir: The clean data from ingest_clean.
        splits_dir: Output folder of the splits.
        report_path: Output Markdown report of what was fitted on train.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
    """
    opts = SplitSettings.from_parameters(settings, headline)
    with runs.step_run(tracking_uri, parent_run_id, STEP, settings=opts):
        runs.log_params(opts.model_dump())
        result = split_bundle(artifacts.load(dataset_dir, ("data",)), opts, consume=True)
        artifacts.save(splits_dir, result)
        # What drift checks compare later data with (kerasflow.monitoring).
        drift_reference = reference.build_reference(
            result.meta, result.parts["train"], result.parts.get("val"), seed=opts.seed
        )
        write_json_atomic(Path(splits_dir, reference.REFERENCE_FILE), drift_reference)
        runs.log_dict_artifact(drift_reference, reference.REFERENCE_FILE)
        for warning in result.meta["split_warnings"]:
            boundary.progress(STEP, f"warning: {warning}")
        import mlflow

        mlflow.log_param("split_strategy", result.meta["split"]["strategy"])
        mlflow.log_metrics({f"{k}_rows": v for k, v in result.meta["split_sizes"].items()})
        datasets.log_parts(result.parts, result.meta, result.meta.get(C.META_SOURCE, ""))
        runs.log_dict_artifact(result.meta[C.META_NORMALIZATION], "normalization.json")
        if "class_weights" in result.meta:
            runs.log_dict_artifact(result.meta["class_weights"], "class_weights.json")
        text = render_report(result.meta)
        write_bytes_atomic(report_path, text.encode())
        runs.log_text_artifact(text, "split_report.md")
        fitted = result.meta.get(CLEANING_REPORT)
        if fitted:
            counts = cleaning.CleaningReport(**fitted).metrics()
            fitted_counts = ("values_imputed", "outlier_values", "rows_dropped_outliers")
            mlflow.log_metrics({k: counts[k] for k in fitted_counts})
            runs.log_dict_artifact(fitted, "cleaning_fitted_on_train.json")
        boundary.progress(
            STEP,
            f"{result.meta['split']['strategy']} split, sizes {result.meta['split_sizes']}",
        )
