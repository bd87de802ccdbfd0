"""Cleaning policies: junk strings, missing values, outliers, duplicates, useless columns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerasflow.cleaning import CleaningPolicy, clean_table, clean_text, coerce_types, is_identifier
from kerasflow.cleaning import CleaningReport as Report

pytestmark = pytest.mark.unit


def frame_with_gaps(n=40, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "x": rng.normal(10, 1, n),
            "z": rng.normal(0, 5, n),
            "colour": rng.choice(["red", "blue"], n).astype(object),
            "y": rng.choice(["a", "b"], n),
        }
    )
    frame.loc[[1, 2, 3], "x"] = np.nan
    frame.loc[[4], "colour"] = None
    return frame


def test_coerce_types_counts_junk_and_keeps_text_columns_text():
    frame = pd.DataFrame(
        {
            "n": ["1", " 2 ", "n/a", "?", "NULL", "", "3.5"] + ["4"] * 23,
            "c": ["x", "y", "?", "x", "y", "x", "y"] + ["x"] * 23,
        },
        dtype=str,
    )
    report = Report()
    out = coerce_types(frame, report)
    assert out["n"].dtype == float and out["n"].isna().sum() == 4
    assert report.junk_values == {"n": 3, "c": 1}  # '' is missing, not junk
    assert out["c"].isna().sum() == 1 and out["c"].dropna().isin(["x", "y"]).all()


def test_a_stray_word_in_a_numeric_column_is_junk():
    frame = pd.DataFrame({"n": [str(i) for i in range(19)] + ["unknownish"]})
    report = Report()
    out = coerce_types(frame, report)
    assert out["n"].dtype == float and report.junk_values == {"n": 1}


@pytest.mark.parametrize(
    ("policy", "expected_x", "rows"),
    [
        ("median", None, 40),
        ("mean", None, 40),
        ("constant", 0.0, 40),
        ("knn", None, 40),
        ("most_frequent", None, 40),
        ("drop", None, 36),
    ],
)
def test_missing_value_policies(policy, expected_x, rows):
    frame = frame_with_gaps()
    clean, report = clean_table(frame, "y", "classification", CleaningPolicy(missing=policy))
    assert len(clean) == rows and not clean.isna().any().any()
    if policy == "drop":
        assert report.rows_dropped_missing == 4 and not report.imputed
        return
    assert report.imputed["x"] == {"count": 3, "strategy": policy}
    assert report.imputed["colour"]["count"] == 1
    filled = clean.loc[[1, 2, 3], "x"]
    if expected_x is not None:
        assert (filled == expected_x).all()
    elif policy == "median":
        assert (filled == frame["x"].median()).all()
    elif policy == "mean":
        assert filled.iloc[0] == pytest.approx(frame["x"].mean())
    else:
        assert filled.between(frame["x"].min(), frame["x"].max()).all()


@pytest.mark.parametrize(
    ("method", "action", "rows", "clipped_to_bound"),
    [
        ("iqr", "clip", 40, True),
        ("zscore", "clip", 40, True),
        ("iqr", "drop", 39, False),
        ("iqr", "keep", 40, False),
    ],
)
def test_outlier_rules_and_actions(method, action, rows, clipped_to_bound):
    frame = frame_with_gaps()
    frame.loc[10, "z"] = 1e6
    policy = CleaningPolicy(outliers=method, outlier_action=action)
    clean, report = clean_table(frame, "y", "classification", policy)
    assert len(clean) == rows
    assert report.outliers["z"]["count"] == 1 and report.outliers["z"]["action"] == action
    if clipped_to_bound:
        assert clean.loc[10, "z"] == pytest.approx(report.outliers["z"]["high"])
        assert report.clip_bounds["z"][1] == pytest.approx(report.outliers["z"]["high"])
    if action == "keep":
        assert clean["z"].max() == 1e6 and not report.clip_bounds
    if action == "drop":
        assert report.rows_dropped_outliers == 1


def test_outliers_are_not_searched_in_discrete_columns():
    frame = frame_with_gaps()
    frame["flag"] = [1.0] * 38 + [0.0, 0.0]
    _, report = clean_table(frame, "y", "classification")
    assert "flag" not in report.outliers


def test_useless_columns_and_duplicates_are_removed_with_reasons():
    frame = frame_with_gaps()
    frame["row_id"] = np.arange(len(frame)) + 100
    frame["name"] = [f"person {i}" for i in range(len(frame))]
    frame["empty"] = np.nan
    frame["site"] = "A"
    frame["weight"] = np.random.default_rng(1).normal(70, 5, len(frame))  # unique floats stay
    twice = pd.concat([frame, frame.iloc[:2]], ignore_index=True)
    twice.loc[40:, "row_id"] = [900, 901]  # repeated records under new ids
    clean, report = clean_table(twice, "y", "classification")
    assert report.columns_removed == {
        "row_id": "identifier (unique per row)",
        "name": "identifier (unique per row)",
        "empty": "empty (no values)",
        "site": "constant (A)",
    }
    assert report.duplicate_rows == 2 and len(clean) == 40
    assert "weight" in clean.columns
    kept, _ = clean_table(twice, "y", "classification", CleaningPolicy(drop_id_columns=False))
    assert "row_id" in kept.columns


def test_rows_without_label_are_dropped_and_counted():
    frame = frame_with_gaps()
    frame["y"] = frame["y"].astype(object)
    frame.loc[[0, 5], "y"] = [None, "n/a"]
    clean, report = clean_table(frame, "y", "classification")
    assert report.rows_without_label == 2 and len(clean) == 38


def test_is_identifier_tells_ids_from_measurements():
    n = 50
    assert is_identifier(pd.Series(np.arange(n) * 1.0), "x")
    assert is_identifier(pd.Series(np.random.default_rng(0).permutation(10**6)[:n] * 1.0), "id")
    assert not is_identifier(pd.Series(np.random.default_rng(0).normal(size=n)), "x")
    assert not is_identifier(pd.Series(np.arange(10) * 1.0), "x")  # too few rows to tell


def test_clean_text_keeps_text_and_label_only():
    frame = pd.DataFrame(
        {
            "id": range(6),
            "text": ["good film", "", None, "bad film", "good film", "fine"],
            "y": ["p", "n", "p", None, "p", "n"],
        }
    )
    clean, report = clean_text(frame, "y", "text")
    assert list(clean.columns) == ["text", "y"]
    assert clean["text"].tolist() == ["good film", "fine"]
    assert report.rows_without_label == 1 and report.rows_dropped_missing == 2
    assert report.duplicate_rows == 1
    assert report.columns_removed == {"id": "not used by a text model"}
