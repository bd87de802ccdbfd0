"""Cleaning a table: configurable policies, every change counted.

Two stages. `clean_table` (the ingest step) does what each row or column decides alone, in a
fixed order: types are coerced first (junk strings such as 'n/a' or '?' become missing values,
number-like text becomes numbers), rows without a label go, then useless columns (empty,
constant, identifier-like), duplicate rows, and rows with missing values when the policy drops
them. `fit_on_train` (the split step) does what needs statistics, fitted on the train split
alone and applied to every split, so nothing of the validation or test rows leaks into
training: outliers first (measured on the values that are present), then missing values, so
that imputed values are never taken for outliers and means are not pulled by them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kerasflow.data.readers import trim_heap
from kerasflow.runtime.errors import UserError

JUNK = frozenset(
    {
        "",
        "?",
        "??",
        "na",
        "n/a",
        "n.a.",
        "nan",
        "null",
        "none",
        "nil",
        "-",
        "--",
        "missing",
        "#n/a",
        "#na",
        "#value!",
        "#ref!",
        "#div/0!",
        "undefined",
        "unknown",
        "inf",
        "-inf",
    }
)
# A column is numeric when at least this share of its present values are numbers; the rest
# are counted as junk.
MIN_NUMERIC_SHARE = 0.9
# Columns with at most this many distinct values are discrete: no outlier rule applies to them.
MAX_DISCRETE_VALUES = 10
MIN_ROWS_FOR_ID = 20
MIN_UNIQUE_SHARE_FOR_TEXT_ID = 0.95
ID_NAME = re.compile(r"(^|_)(id|uuid|guid|key|index|row)($|_)|^id[A-Z0-9]", re.IGNORECASE)
CONSTANT_FILL_NUMBER = 0.0
CONSTANT_FILL_CATEGORY = "missing"
TRAIN = "train"


@dataclass
class CleaningPolicy:
    """What cleaning does; each field has a sensible default.

    Attributes:
        missing: drop, mean, median, most_frequent, constant or knn (categories use the most
            frequent value for mean, median and knn).
        outliers: iqr (beyond `iqr_factor` interquartile ranges), zscore (beyond `zscore_limit`
            standard deviations) or none.
        outlier_action: clip to the bounds, drop the row, or keep (count only).
        drop_duplicates: drop repeated rows.
        drop_id_columns: remove columns that identify rows (unique per row) and carry no signal.
        keep_columns: columns never removed, imputed or clipped (a time column, the text).
    """

    missing: str = "median"
    outliers: str = "iqr"
    outlier_action: str = "clip"
    drop_duplicates: bool = True
    drop_id_columns: bool = True
    keep_columns: tuple[str, ...] = ()
    iqr_factor: float = 3.0
    zscore_limit: float = 4.0
    knn_neighbors: int = 5


@dataclass
class CleaningReport:
    """Every change cleaning made, by kind."""

    rows_in: int = 0
    rows_out: int = 0
    junk_values: dict[str, int] = field(default_factory=dict)
    rows_without_label: int = 0
    duplicate_rows: int = 0
    rows_dropped_missing: int = 0
    rows_dropped_outliers: int = 0
    # Values left missing for `fit_on_train` to impute, by column.
    missing: dict[str, int] = field(default_factory=dict)
    imputed: dict[str, dict] = field(default_factory=dict)
    # What a missing value of each column becomes, for the served model to do the same.
    fill_values: dict[str, Any] = field(default_factory=dict)
    outliers: dict[str, dict] = field(default_factory=dict)
    clip_bounds: dict[str, list[float]] = field(default_factory=dict)
    columns_removed: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        import dataclasses

        return dataclasses.asdict(self)

    def metrics(self) -> dict[str, float]:
        """The counts worth comparing across runs (logged as MLflow metrics)."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_without_label": self.rows_without_label,
            "duplicate_rows": self.duplicate_rows,
            "rows_dropped_missing": self.rows_dropped_missing,
            "rows_dropped_outliers": self.rows_dropped_outliers,
            "junk_values": sum(self.junk_values.values()),
            "values_missing": sum(self.missing.values()),
            "values_imputed": sum(v["count"] for v in self.imputed.values()),
            "outlier_values": sum(v["count"] for v in self.outliers.values()),
            "columns_removed": len(self.columns_removed),
        }


def coerce_types(frame: Any, report: CleaningReport, inplace: bool = False) -> Any:
    """Strips text, turns junk strings into missing values and number-like columns into numbers.

    Junk tokens ('n/a', '?', 'NULL'...) are counted per column; so are the odd non-numbers of a
    column that is numeric otherwise (at least MIN_NUMERIC_SHARE of its values). With `inplace`
    each column of `frame` is replaced as it is coerced, so the strings as read and their
    coerced copy are never both held whole.
    """
    import pandas as pd

    if not inplace:
        frame = frame.copy()
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_bool_dtype(series):
            frame[col] = series.astype("string")
            continue
        if pd.api.types.is_numeric_dtype(series):
            frame[col] = series.astype("float64").replace([np.inf, -np.inf], np.nan)
            continue
        part = _TextPart(series)
        junk = part.junk
        if part.present and part.numeric >= MIN_NUMERIC_SHARE * part.present:
            junk += part.present - part.numeric
            frame[col] = part.numbers()
        else:
            frame[col] = part.objects()
        if junk:
            report.junk_values[str(col)] = junk
    return frame


class _TextPart:
    """One text column (or a run of its rows) stripped, with junk masked and its numbers read."""

    def __init__(self, series: Any) -> None:
        import pandas as pd

        text = series.astype("string").str.strip()
        is_junk = text.str.lower().isin(JUNK).fillna(False)
        self.junk = int((is_junk & (text != "")).sum())
        self.text = text.mask(is_junk)
        self.present = int(self.text.notna().sum())
        numbers = pd.to_numeric(self.text, errors="coerce")
        self._numbers = numbers.where(np.isfinite(numbers.astype("float64")))
        self.numeric = int(self._numbers.notna().sum())

    def numbers(self) -> Any:
        """The values as float64, missing where not a finite number."""
        return self._numbers.astype("float64")

    def objects(self) -> Any:
        """The values as text (object dtype, one object per distinct value, None if missing)."""
        return distinct_objects(self.text)


def coerce_chunks(chunks: Any, report: CleaningReport, reread: Any) -> Any:
    """`coerce_types` over a table read in runs of rows, never holding all its strings at once.

    Each run keeps a column as numbers when at least MIN_NUMERIC_SHARE of its present values
    are numbers, else as text; the whole column's share then decides, as in `coerce_types`.
    A column judged text overall that some run kept as numbers is read again as text through
    `reread(columns)`, an iterable of the same runs holding only those columns. The result and
    the junk counts are those `coerce_types` gives on the whole table.
    """
    import pandas as pd

    columns: list[str] = []
    kept: dict[str, list[Any]] = {}
    counts: dict[str, list[int]] = {}  # junk, present, numeric
    for chunk in chunks:
        if not columns:
            columns = [str(c) for c in chunk.columns]
            kept = {c: [] for c in columns}
            counts = {c: [0, 0, 0] for c in columns}
        for col in columns:
            part = _TextPart(chunk[col])
            tally = counts[col]
            tally[0] += part.junk
            tally[1] += part.present
            tally[2] += part.numeric
            looks_numeric = part.present and part.numeric >= MIN_NUMERIC_SHARE * part.present
            kept[col].append(part.numbers() if looks_numeric else part.objects())
        del chunk
    numeric = {
        c: counts[c][1] > 0 and counts[c][2] >= MIN_NUMERIC_SHARE * counts[c][1] for c in columns
    }
    again = [c for c in columns if not numeric[c] and any(p.dtype != object for p in kept[c])]
    if again:
        kept.update({c: [] for c in again})
        for chunk in reread(again):
            for col in again:
                kept[col].append(_TextPart(chunk[col]).objects())
    frame = pd.DataFrame(index=pd.RangeIndex(sum(len(p) for p in kept[columns[0]])))
    for col in columns:
        junk, present, found = counts[col]
        parts = kept.pop(col)
        if numeric[col]:
            junk += present - found
            parts = [p if p.dtype != object else _as_numbers(p) for p in parts]
            frame[col] = np.concatenate([p.to_numpy() for p in parts])
        else:
            frame[col] = pd.Series(
                np.concatenate([p.to_numpy() for p in parts]), index=frame.index, dtype=object
            )
        runs = len(parts)
        del parts
        if runs > 1:  # the column's runs, freed, would otherwise stay resident beside it
            trim_heap()
        if junk:
            report.junk_values[col] = junk
    return frame


def _as_numbers(objects: Any) -> Any:
    """A run kept as text, read as numbers once its column proved numeric overall."""
    import pandas as pd

    numbers = pd.to_numeric(objects.astype("string"), errors="coerce")
    return numbers.where(np.isfinite(numbers.astype("float64"))).astype("float64")


def distinct_objects(values: Any, convert: Any = None) -> Any:
    """The Series `values` as object dtype, missing ones as None, one object per distinct value.

    A row-by-row conversion makes a Python object per row (about 60 bytes for a short string);
    here each distinct value becomes one object, `convert(value)` when given, that its rows
    share.
    """
    import pandas as pd

    codes, uniques = pd.factorize(values)
    table = np.asarray(uniques, dtype=object)
    if convert is not None:
        table = np.asarray([convert(v) for v in table], dtype=object)
    # Missing rows have code -1, which picks the None appended last.
    return pd.Series(np.append(table, None)[codes], index=values.index, dtype=object)


def is_identifier(series: Any, name: str) -> bool:
    """True for a column that names rows rather than describes them (unique per row).

    Text (nearly) unique per row, or integers unique per row that fill a dense range (0..n,
    1001..2000) or sit under an id-like name. Unique floats are measurements, not ids.
    """
    import pandas as pd

    values = series.dropna()
    if len(values) < MIN_ROWS_FOR_ID:
        return False
    if not pd.api.types.is_numeric_dtype(values):
        # Text that is (nearly) unique per row names rows; one-hot codes of it would be noise.
        return values.nunique() >= MIN_UNIQUE_SHARE_FOR_TEXT_ID * len(series)
    if values.nunique() != len(series):
        return False
    numbers = values.to_numpy(dtype="float64")
    if not np.all(np.mod(numbers, 1) == 0):
        return False
    dense = numbers.max() - numbers.min() + 1 <= 1.5 * len(numbers)
    return bool(dense or ID_NAME.search(str(name)))


def _remove_columns(frame: Any, label: str, policy: CleaningPolicy, report: CleaningReport):
    for col in frame.columns:
        if col == label or col in policy.keep_columns:
            continue
        series = frame[col]
        if series.isna().all():
            report.columns_removed[str(col)] = "empty (no values)"
        elif series.nunique(dropna=True) <= 1:
            report.columns_removed[str(col)] = f"constant ({series.dropna().iloc[0]})"
        elif policy.drop_id_columns and is_identifier(series, str(col)):
            report.columns_removed[str(col)] = "identifier (unique per row)"
    return frame.drop(columns=list(report.columns_removed))


def _drop_duplicates(frame: Any, policy: CleaningPolicy, report: CleaningReport) -> Any:
    if not policy.drop_duplicates:
        return frame
    repeated = duplicated_rows(frame)
    if not repeated.any():
        return frame
    report.duplicate_rows += int(repeated.sum())
    return frame[~repeated]


def duplicated_rows(frame: Any) -> np.ndarray:
    """`frame.duplicated()` as a boolean array, in a few bytes per row.

    pandas codes every column of every row at once (8 bytes per cell) and then copies the frame
    to drop the repeats. Here each column is coded in turn and folded into a 64-bit key per
    row; only rows whose key repeats are compared exactly, with `duplicated` itself, so two
    rows are duplicates exactly when pandas says so (missing values equal each other).
    """
    import pandas as pd

    if len(frame.columns) == 0 or len(frame) < 2:
        return np.zeros(len(frame), dtype=bool)
    keys = np.zeros(len(frame), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for col in frame.columns:
            codes, _ = pd.factorize(frame[col])  # equal values, missing ones too, share a code
            keys ^= codes.astype(np.uint64)
            keys *= np.uint64(0x9E3779B97F4A7C15)
            keys ^= keys >> np.uint64(29)
            del codes
    candidates = np.flatnonzero(pd.Series(keys).duplicated(keep=False).to_numpy())
    repeated = np.zeros(len(frame), dtype=bool)
    if len(candidates):
        # A row equal to a candidate has its key, so it is a candidate too, in the same order.
        repeated[candidates] = frame.iloc[candidates].duplicated().to_numpy()
    return repeated


def outlier_bounds(values: np.ndarray, policy: CleaningPolicy) -> tuple[float, float] | None:
    """The (low, high) bounds of normal values, or None when the rule does not apply."""
    values = values[~np.isnan(values)]
    if len(np.unique(values)) <= MAX_DISCRETE_VALUES:
        return None
    if policy.outliers == "iqr":
        q1, q3 = np.percentile(values, [25, 75])
        iqr = q3 - q1
        if iqr <= 0:
            return None
        return float(q1 - policy.iqr_factor * iqr), float(q3 + policy.iqr_factor * iqr)
    if policy.outliers == "zscore":
        mean, std = values.mean(), values.std()
        if std <= 0:
            return None
        return float(mean - policy.zscore_limit * std), float(mean + policy.zscore_limit * std)
    return None


def _handle_outliers(parts: dict[str, Any], numeric: list[str], policy: CleaningPolicy, report):
    train = parts[TRAIN]
    drop = np.zeros(len(train), dtype=bool)
    if policy.outliers == "none":
        return parts, ~drop
    for col in numeric:
        bounds = outlier_bounds(train[col].to_numpy(dtype="float64"), policy)
        if bounds is None:
            continue
        low, high = bounds
        if policy.outlier_action == "clip":
            # The model clips served values to the same bounds (see modeling.build_inputs).
            report.clip_bounds[col] = [low, high]
        count = 0
        for name, frame in parts.items():
            values = frame[col].to_numpy(dtype="float64")
            outside = (values < low) | (values > high)
            count += int(outside.sum())
            if policy.outlier_action == "clip":
                frame[col] = np.where(np.isnan(values), np.nan, np.clip(values, low, high))
            elif policy.outlier_action == "drop" and name == TRAIN:
                drop |= outside
        if not count:
            continue
        report.outliers[col] = {
            "count": count,
            "rule": policy.outliers,
            "action": policy.outlier_action,
            "low": round(low, 6),
            "high": round(high, 6),
        }
    if drop.any():
        # Only training rows are dropped: validation and test rows stay as served rows come.
        report.rows_dropped_outliers = int(drop.sum())
        parts = {**parts, TRAIN: train[~drop]}
    return parts, ~drop


def _drop_missing(frame: Any, columns: list[str], report: CleaningReport) -> Any:
    before = len(frame)
    frame = frame.dropna(subset=columns)
    report.rows_dropped_missing = before - len(frame)
    return frame


def _impute(parts: dict[str, Any], numeric: list[str], categorical: list[str], policy, report):
    from sklearn.impute import KNNImputer

    if policy.missing == "drop":
        return  # `clean_table` dropped those rows
    counts = {c: sum(int(f[c].isna().sum()) for f in parts.values()) for c in numeric + categorical}
    num_missing = [c for c in numeric if counts[c]]
    cat_missing = [c for c in categorical if counts[c]]
    train = parts[TRAIN]
    if num_missing:
        if policy.missing == "knn":
            # Distances need comparable scales: impute on standardized values, then undo.
            values = train[numeric].to_numpy(dtype="float64")
            mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
            mean, std = np.nan_to_num(mean), np.nan_to_num(std)
            std[std == 0] = 1.0
            imputer = KNNImputer(
                n_neighbors=min(policy.knn_neighbors, max(1, len(train) - 1)),
                keep_empty_features=True,
            ).fit((values - mean) / std)
            for frame in parts.values():
                scaled = (frame[numeric].to_numpy(dtype="float64") - mean) / std
                frame[numeric] = imputer.transform(scaled) * std + mean
        else:
            # `_fill_values` gave each column the statistic of train that the policy names.
            for frame in parts.values():
                for col in num_missing:
                    frame[col] = frame[col].astype("float64").fillna(report.fill_values[col])
        for col in num_missing:
            report.imputed[col] = {"count": counts[col], "strategy": policy.missing}
    if cat_missing:
        strategy = "constant" if policy.missing == "constant" else "most_frequent"
        for frame in parts.values():
            for col in cat_missing:
                frame[col] = frame[col].fillna(report.fill_values[col])
        for col in cat_missing:
            report.imputed[col] = {"count": counts[col], "strategy": strategy}


def _fill_values(
    train: Any, numeric: list[str], categorical: list[str], policy: CleaningPolicy
) -> dict[str, Any]:
    """The value training gives a missing value of each column, for the served model to give
    the same. Numbers: KNN imputes row by row and dropping keeps no such rows, so those two fall
    back to the train mean. Categories: the constant, else the most frequent one."""
    fills: dict[str, Any] = {}
    strategy = policy.missing if policy.missing not in ("knn", "drop") else "mean"
    for col in numeric:
        fills[col] = fill_number(train[col].to_numpy(dtype="float64"), strategy)
    for col in categorical:
        if policy.missing == "constant":
            fills[col] = CONSTANT_FILL_CATEGORY
        else:
            fills[col] = str(most_frequent(train[col]))
    return fills


def fill_number(values: np.ndarray, strategy: str) -> float:
    """What scikit-learn's SimpleImputer (`keep_empty_features=True`) fills a missing value of
    this column with, computed on the column alone rather than on a masked copy of the table:
    the mean, the median, the most frequent value (the smallest of those tied) or the
    constant; 0 for a column without values."""
    if strategy == "constant":
        return CONSTANT_FILL_NUMBER
    present = values[~np.isnan(values)]
    if not len(present):
        return 0.0
    if strategy == "mean":
        return float(present.mean())
    if strategy == "median":
        return float(np.median(present))
    if strategy == "most_frequent":
        import pandas as pd

        return float(most_frequent(pd.Series(present)))
    raise ValueError(f"unknown imputation strategy {strategy!r}")


def most_frequent(values: Any) -> Any:
    """The most frequent present value, the smallest of those tied (as scikit-learn's
    SimpleImputer picks), 0 when none is present (as its `keep_empty_features` fills)."""
    counts = values.value_counts(dropna=True)
    if counts.empty:
        return 0
    return min(counts.index[counts == counts.max()])


def policy_dict(policy: CleaningPolicy) -> dict[str, Any]:
    """`policy` as JSON-ready data (the bundle metadata keeps it); `policy_from_dict` reverses."""
    import dataclasses

    values = dataclasses.asdict(policy)
    values["keep_columns"] = list(policy.keep_columns)
    return values


def policy_from_dict(values: dict[str, Any]) -> CleaningPolicy:
    """The inverse of `policy_dict`."""
    return CleaningPolicy(**{**values, "keep_columns": tuple(values.get("keep_columns", ()))})


def fit_on_train(
    parts: dict[str, Any], features: list[dict], policy: CleaningPolicy, copy: bool = True
) -> tuple[dict[str, Any], CleaningReport, np.ndarray]:
    """Handles outliers and imputes missing values of every split with statistics of train.

    `parts` maps split names (one of them 'train') to frames; `features` are the bundle's
    feature entries (name and kind). Returns new frames, a report of what changed and which
    train rows were kept (a boolean mask over the train rows given). Without `copy` the
    frames given are changed in place (the caller's own, e.g. fresh takes of a split).
    """
    report = CleaningReport(rows_in=sum(len(f) for f in parts.values()))
    kept = set(policy.keep_columns)
    numeric = [f["name"] for f in features if f["kind"] == "numeric" and f["name"] not in kept]
    categorical = [
        f["name"] for f in features if f["kind"] == "categorical" and f["name"] not in kept
    ]
    if copy:
        parts = {name: frame.copy() for name, frame in parts.items()}
    parts, train_kept = _handle_outliers(parts, numeric, policy, report)
    report.fill_values = _fill_values(parts[TRAIN], numeric, categorical, policy)
    _impute(parts, numeric, categorical, policy, report)
    for frame in parts.values():
        for col in categorical:
            frame[col] = frame[col].astype(str)
    parts = {name: frame.reset_index(drop=True) for name, frame in parts.items()}
    report.rows_out = sum(len(f) for f in parts.values())
    return parts, report, train_kept


def clean_table(
    frame: Any,
    label: str,
    task: str,
    policy: CleaningPolicy | None = None,
    report: CleaningReport | None = None,
    coerced: bool = False,
):
    """Cleans a table with `policy`; returns the clean frame and a CleaningReport.

    The label column is only coerced and checked: rows without a label are dropped, a
    regression label must be numeric. A `report` passed in (from an earlier `coerce_types`
    of the same frame) is continued; `coerced` says the frame is that function's result
    already.

    Raises:
        UserError: when the label has no values, a regression label is not numeric, or no
            feature column is left.
    """
    import pandas as pd

    policy = policy or CleaningPolicy()
    report = report or CleaningReport(rows_in=len(frame))
    if not coerced:
        frame = coerce_types(frame, report)
    missing_label = frame[label].isna()
    if missing_label.all():
        raise UserError(f"label column '{label}' has no values")
    report.rows_without_label = int(missing_label.sum())
    if report.rows_without_label:
        frame = frame[~missing_label]
    if task == "regression" and not pd.api.types.is_numeric_dtype(frame[label]):
        example = frame[label][pd.to_numeric(frame[label], errors="coerce").isna()].iloc[0]
        raise UserError(
            f"regression label '{label}' holds values that are not numbers: {example!r}"
        )
    # Duplicates go before and after the column checks: repeated records would hide an id
    # column, and rows that differ only in a removed column are duplicates too.
    frame = _drop_duplicates(frame, policy, report)
    frame = _remove_columns(frame, label, policy, report)
    frame = _drop_duplicates(frame, policy, report)
    features = [c for c in frame.columns if c != label and c not in policy.keep_columns]
    if not features:
        raise UserError(
            "no usable feature columns left after cleaning (removed: "
            + ", ".join(f"{c}: {r}" for c, r in report.columns_removed.items())
            + ")"
        )
    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    # Columns are replaced below, never written into: the caller's frame keeps its own.
    frame = frame.copy(deep=False)
    if policy.missing == "drop":
        frame = _drop_missing(frame, numeric + categorical, report)
    for col in numeric + categorical:
        if count := int(frame[col].isna().sum()):
            report.missing[col] = count
    for col in categorical:
        # Categories become text; missing ones stay missing until `fit_on_train`.
        frame[col] = distinct_objects(frame[col], str)
    report.rows_out = len(frame)
    return frame.reset_index(drop=True), report


def clean_text(
    frame: Any,
    label: str,
    text_column: str,
    policy: CleaningPolicy | None = None,
    report: CleaningReport | None = None,
):
    """Cleans a text table: keeps the text and label columns, drops rows without text or label
    and (by policy) duplicate rows.

    Raises:
        UserError: when the text column is missing or holds no text.
    """
    policy = policy or CleaningPolicy()
    report = report or CleaningReport(rows_in=len(frame))
    if text_column not in frame.columns:
        raise UserError(f"text column '{text_column}' not found")
    for col in frame.columns:
        if col not in (label, text_column):
            report.columns_removed[str(col)] = "not used by a text model"
    frame = frame[[text_column, label]].copy()
    text = frame[text_column].astype("string").str.strip()
    frame[text_column] = text
    labels = frame[label].astype("string").str.strip()
    missing_label = labels.isna() | labels.str.lower().isin(JUNK)
    report.rows_without_label = int(missing_label.sum())
    no_text = (text.isna() | (text == "")) & ~missing_label
    if bool((text.isna() | (text == "")).all()):
        raise UserError(f"text column '{text_column}' holds no text")
    report.rows_dropped_missing = int(no_text.sum())
    frame = frame[~missing_label & ~no_text]
    frame[text_column] = frame[text_column].astype(str)
    if policy.drop_duplicates:
        before = len(frame)
        frame = frame.drop_duplicates()
        report.duplicate_rows = before - len(frame)
    report.rows_out = len(frame)
    return frame.reset_index(drop=True), report


def dedupe_arrays(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Positions of the first occurrence of each distinct (x, y) row, in order, and the count
    of duplicates."""
    import hashlib

    # A digest per row instead of sorting the rows: sorting copies the whole array several
    # times, a digest reads each row once.
    seen: set[bytes] = set()
    keep = []
    for i in range(len(x)):
        # The rows' own buffers, not copies of them as bytes (as artifacts.hash_part reads).
        digest = hashlib.blake2b(np.ascontiguousarray(x[i]), digest_size=16)
        digest.update(np.ascontiguousarray(y[i]))
        key = digest.digest()
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return np.asarray(keep, dtype=np.int64), len(x) - len(keep)
