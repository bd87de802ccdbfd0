"""Drift tests: new data or logged requests against a model's drift reference.

Each feature gets one test with a p-value and an effect size: numbers the two-sample
Kolmogorov-Smirnov test and the population stability index (PSI) over the reference's deciles;
categories (and classes) Pearson's chi-squared test against the reference's shares and their
PSI; images a KS test and PSI per image-level statistic (mean intensity, contrast, bright share:
three tests, not one per pixel, which would raise false alarms by chance); text the KS test of
the documents' out-of-vocabulary shares and the rise of their mean. The p-values of all tests
are corrected together (Benjamini-Hochberg by default, or Bonferroni). A test flags drift when
its corrected p-value is below `alpha` and its effect reaches its threshold (PSI 0.2, the usual
mark of a significant shift): with thousands of requests a change too small to matter is still
"significant" (more so when requests repeat the same rows, which the tests take as independent),
and a large PSI on a handful of rows is noise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from kerasflow.monitoring import reference as R
from kerasflow.runtime.errors import UserError

MIN_ROWS = 20
PSI_FLOOR = 1e-4


@dataclasses.dataclass
class DriftOptions:
    """Thresholds of the drift tests."""

    alpha: float = 0.05
    min_psi: float = 0.2
    min_oov_increase: float = 0.05
    correction: str = "bh"


@dataclasses.dataclass
class Current:
    """The data to test: columns by feature name (tables, text) or images, and labels if any."""

    columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    images: np.ndarray | None = None
    labels: np.ndarray | None = None
    rows: int = 0
    source: str = ""


@dataclasses.dataclass
class FeatureTest:
    """One test of one feature (or image statistic, or the label)."""

    name: str
    kind: str
    test: str
    statistic: float
    p_value: float
    effect: str
    effect_value: float
    threshold: float
    rows: int
    p_adjusted: float = math.nan
    drifted: bool = False
    reference_values: list[float] | None = dataclasses.field(default=None, repr=False)
    current_values: list[float] | None = dataclasses.field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The test's figures (without the values it compared)."""
        out = dataclasses.asdict(self)
        out.pop("reference_values")
        out.pop("current_values")
        return out


@dataclasses.dataclass
class DriftReport:
    """Every test, the verdict and what was compared."""

    tests: list[FeatureTest]
    options: DriftOptions
    reference_rows: int
    current_rows: int
    source: str

    @property
    def drifted(self) -> bool:
        """Whether any test flagged drift."""
        return any(t.drifted for t in self.tests)

    @property
    def drifted_features(self) -> list[str]:
        """The names of the tests that flagged drift."""
        return [t.name for t in self.tests if t.drifted]

    def as_dict(self) -> dict[str, Any]:
        """The report as a JSON document."""
        return {
            "drifted": self.drifted,
            "drifted_features": self.drifted_features,
            "source": self.source,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "options": dataclasses.asdict(self.options),
            "tests": [t.as_dict() for t in self.tests],
        }


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population stability index of `current` against `reference` over the reference's deciles."""
    edges = np.unique(np.quantile(reference, np.linspace(0.1, 0.9, 9)))
    # Bins (-inf, e1], (e1, e2], ... (ek, inf): a value equal to an edge (a discrete feature's
    # value, a constant statistic) has a bin of its own below the rest.
    ref = np.bincount(np.searchsorted(edges, reference, side="left"), minlength=len(edges) + 1)
    cur = np.bincount(np.searchsorted(edges, current, side="left"), minlength=len(edges) + 1)
    return _psi_of_counts(ref, cur)


def _psi_of_counts(ref: np.ndarray, cur: np.ndarray) -> float:
    p = np.maximum(ref / max(ref.sum(), 1), PSI_FLOOR)
    q = np.maximum(cur / max(cur.sum(), 1), PSI_FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_test(name: str, kind: str, reference: Any, current: Any, opts: DriftOptions):
    """KS test and PSI of a number against its reference sample (missing values left out)."""
    from scipy import stats

    ref = np.asarray(reference, dtype="float64")
    cur = np.asarray(current, dtype="float64").reshape(-1)
    cur = cur[np.isfinite(cur)]
    if len(cur) < MIN_ROWS or len(ref) < MIN_ROWS:
        return None
    result = stats.ks_2samp(ref, cur)
    return FeatureTest(
        name, kind, "ks", float(result.statistic), float(result.pvalue), "psi", psi(ref, cur),
        opts.min_psi, len(cur), reference_values=ref.tolist(), current_values=cur.tolist(),
    )  # fmt: skip


def categorical_test(name: str, kind: str, counts: dict[str, int], current: Any, opts):
    """Chi-squared test and PSI of category shares against the reference's counts; a category
    the reference does not know counts as the reference's rarest bucket, `(other)`."""
    from scipy import stats

    values = [str(v) for v in np.asarray(current, dtype=object).reshape(-1) if v is not None]
    values = [v for v in values if v not in ("nan", "None")]
    if len(values) < MIN_ROWS:
        return None
    names = list(counts)
    if R.OTHER not in names:
        names.append(R.OTHER)
    index = {n: i for i, n in enumerate(names)}
    ref = np.asarray([counts.get(n, 0) for n in names], dtype="float64")
    cur = np.zeros(len(names))
    for v in values:
        cur[index.get(v, index[R.OTHER])] += 1
    # Half a count for every bucket, so a category the reference never saw is a finite surprise.
    expected = (ref + 0.5) / (ref.sum() + 0.5 * len(ref)) * cur.sum()
    result = stats.chisquare(cur, expected)
    return FeatureTest(
        name, kind, "chi2", float(result.statistic), float(result.pvalue), "psi",
        _psi_of_counts(ref, cur), opts.min_psi, len(values),
    )  # fmt: skip


def text_test(name: str, entry: dict, current: Any, opts: DriftOptions):
    """KS test of the documents' out-of-vocabulary shares; effect: the rise of their mean."""
    from scipy import stats

    texts = [str(v) for v in np.asarray(current, dtype=object).reshape(-1)]
    if len(texts) < MIN_ROWS:
        return None
    ref = np.asarray(entry["oov_sample"], dtype="float64")
    cur = R.oov_shares(texts, set(entry["vocabulary"]))
    result = stats.ks_2samp(ref, cur)
    return FeatureTest(
        f"{name}:oov_share", "text", "ks", float(result.statistic), float(result.pvalue),
        "oov_increase", float(cur.mean() - ref.mean()), opts.min_oov_increase, len(texts),
        reference_values=ref.tolist(), current_values=cur.tolist(),
    )  # fmt: skip


def run_tests(reference: dict, current: Current, options: DriftOptions | None = None):
    """Every drift test of `current` against `reference`, corrected together.

    Raises:
        UserError: too few rows, or data that share no feature with the reference.
    """
    opts = options or DriftOptions()
    if current.rows < MIN_ROWS:
        raise UserError(
            f"{current.source or 'the data'} has {current.rows} rows; drift tests need at least "
            f"{MIN_ROWS}"
        )
    tests: list[FeatureTest | None] = []
    images = reference.get("images")
    if images is not None:
        if current.images is None:
            raise UserError(f"{current.source} holds no images, but the model was trained on them")
        stats = R.image_statistics(current.images, tuple(images["pixel_range"]))
        for stat, sample in images["statistics"].items():
            tests.append(numeric_test(f"image:{stat}", "image", sample, stats[stat], opts))
    missing = []
    for name, entry in reference.get("features", {}).items():
        if name not in current.columns:
            missing.append(name)
            continue
        values = current.columns[name]
        if entry["kind"] == "numeric":
            tests.append(numeric_test(name, "numeric", entry["sample"], values, opts))
        elif entry["kind"] == "categorical":
            tests.append(categorical_test(name, "categorical", entry["counts"], values, opts))
        else:
            tests.append(text_test(name, entry, values, opts))
    if images is None and len(missing) == len(reference.get("features", {})):
        raise UserError(
            f"{current.source} has none of the model's features ({', '.join(missing[:5])})"
        )
    if missing:
        raise UserError(f"{current.source} lacks the feature(s) {', '.join(missing[:5])}")
    if current.labels is not None:
        tests.append(label_test(reference["label"], current.labels, opts))
    done = [t for t in tests if t is not None]
    correct(done, opts)
    return DriftReport(done, opts, int(reference.get("rows", 0)), current.rows, current.source)


def label_test(label: dict, values: np.ndarray, opts: DriftOptions):
    """Label shift: class shares (chi-squared) or the target's distribution (KS)."""
    if label["task"] == "classification":
        counts = dict(zip(label["classes"], label["counts"], strict=True))
        return categorical_test("label", "label", counts, values, opts)
    return numeric_test("label", "label", label["sample"], values, opts)


def correct(tests: list[FeatureTest], opts: DriftOptions) -> None:
    """Sets each test's corrected p-value and verdict (Benjamini-Hochberg or Bonferroni)."""
    from scipy import stats

    if not tests:
        return
    p = np.asarray([t.p_value for t in tests], dtype="float64")
    p = np.nan_to_num(p, nan=1.0)
    if opts.correction == "bonferroni":
        adjusted = np.minimum(p * len(p), 1.0)
    else:
        adjusted = stats.false_discovery_control(p, method="bh")
    for test, value in zip(tests, adjusted, strict=True):
        test.p_adjusted = float(value)
        test.drifted = bool(value < opts.alpha and test.effect_value >= test.threshold)
