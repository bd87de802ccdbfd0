"""Cleaning policies: junk strings, missing values, outliers, duplicates, useless columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kerasflow.data.cleaning import (
    CONSTANT_FILL_CATEGORY,
    CleaningPolicy,
    clean_table,
    clean_text,
    coerce_types,
    distinct_objects,
    duplicated_rows,
    fill_number,
    fit_on_train,
    is_identifier,
    most_frequent,
    outlier_bounds,
    policy_dict,
    policy_from_dict,
)
from kerasflow.data.cleaning import CleaningReport as Report

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


FEATURES = [
    {"name": "x", "kind": "numeric"},
    {"name": "z", "kind": "numeric"},
    {"name": "colour", "kind": "categorical"},
]


def train_and_test(clean: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Rows 0-29 train, the rest test (fit_on_train takes any split names with a 'train')."""
    return {"train": clean.iloc[:30], "test": clean.iloc[30:]}


@pytest.mark.parametrize(
    ("policy", "expected_x"),
    [
        ("median", None),
        ("mean", None),
        ("constant", 0.0),
        ("knn", None),
        ("most_frequent", None),
    ],
)
def test_missing_values_are_imputed_with_statistics_of_train_only(policy, expected_x):
    frame = frame_with_gaps()
    # Test rows far from train: a statistic that saw them would show it.
    frame.loc[30:, "x"] = 1000.0
    frame.loc[35, "x"] = np.nan
    clean, report = clean_table(frame, "y", "classification", CleaningPolicy(missing=policy))
    assert len(clean) == 40 and report.missing == {"x": 4, "colour": 1}
    assert clean["x"].isna().sum() == 4  # left for the split step
    policy_ = CleaningPolicy(missing=policy, outliers="none")
    parts, fitted, kept = fit_on_train(train_and_test(clean), FEATURES, policy_)
    assert kept.all() and not any(p.isna().any().any() for p in parts.values())
    assert fitted.imputed["x"] == {"count": 4, "strategy": policy}
    assert fitted.imputed["colour"]["count"] == 1
    assert parts["train"]["colour"].isin(["red", "blue", CONSTANT_FILL_CATEGORY]).all()
    train_x = frame.loc[:29, "x"]
    # The served model fills a missing number with this value (KNN falls back to the mean).
    fill = {"median": train_x.median(), "constant": 0.0}.get(policy, train_x.mean())
    if policy != "most_frequent":
        assert fitted.fill_values["x"] == pytest.approx(fill)
    filled = pd.concat([parts["train"].loc[[1, 2, 3], "x"], parts["test"].loc[[5], "x"]])
    if expected_x is not None:
        assert (filled == expected_x).all()
    elif policy == "median":
        assert (filled == train_x.median()).all()
    elif policy == "mean":
        assert filled.to_numpy() == pytest.approx(train_x.mean())
    else:
        assert filled.between(train_x.min(), train_x.max()).all()


def test_the_drop_policy_drops_rows_with_missing_values_at_ingest():
    clean, report = clean_table(
        frame_with_gaps(), "y", "classification", CleaningPolicy(missing="drop")
    )
    assert len(clean) == 36 and not clean.isna().any().any()
    assert report.rows_dropped_missing == 4 and not report.missing


@pytest.mark.parametrize(
    ("method", "action"),
    [("iqr", "clip"), ("zscore", "clip"), ("iqr", "drop"), ("iqr", "keep")],
)
def test_outlier_bounds_come_from_train_and_apply_to_every_split(method, action):
    frame = frame_with_gaps()
    frame.loc[10, "z"] = 1e6
    frame.loc[35, "z"] = -1e6
    policy = CleaningPolicy(outliers=method, outlier_action=action)
    clean, _ = clean_table(frame, "y", "classification", policy)
    parts, report, kept = fit_on_train(train_and_test(clean), FEATURES, policy)
    low, high = outlier_bounds(clean["z"].iloc[:30].to_numpy(dtype="float64"), policy)
    outliers = report.outliers["z"]
    assert (outliers["low"], outliers["high"]) == (round(low, 6), round(high, 6))
    assert outliers["count"] == 2 and outliers["action"] == action
    if action == "clip":
        assert parts["train"].loc[10, "z"] == pytest.approx(high)
        assert parts["test"].loc[5, "z"] == pytest.approx(low)
        assert report.clip_bounds["z"] == [low, high]
    else:
        assert not report.clip_bounds and parts["test"].loc[5, "z"] == -1e6
    if action == "drop":
        # Only training rows go; a test row stays as a served row would come.
        assert report.rows_dropped_outliers == 1 and len(parts["train"]) == 29
        assert not kept[10] and kept.sum() == 29
    if action == "keep":
        assert parts["train"].loc[10, "z"] == 1e6 and kept.all()


def test_outliers_are_not_searched_in_discrete_columns():
    frame = frame_with_gaps()
    frame["flag"] = [1.0] * 38 + [0.0, 0.0]
    clean, _ = clean_table(frame, "y", "classification")
    features = [*FEATURES, {"name": "flag", "kind": "numeric"}]
    _, report, _ = fit_on_train(train_and_test(clean), features, CleaningPolicy())
    assert "flag" not in report.outliers


def test_a_policy_survives_the_trip_through_the_bundle_metadata():
    policy = CleaningPolicy(missing="knn", outlier_action="drop", keep_columns=("when",))
    assert policy_from_dict(json.loads(json.dumps(policy_dict(policy)))) == policy


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


def test_distinct_objects_share_one_object_per_value_and_keep_missing_as_none():
    values = pd.Series(["b", None, "a", "b", np.nan, "a"], dtype="str", index=[5, 4, 3, 2, 1, 0])
    out = distinct_objects(values)
    assert out.dtype == object and out.index.tolist() == [5, 4, 3, 2, 1, 0]
    assert out.tolist() == ["b", None, "a", "b", None, "a"]
    assert out.iloc[0] is out.iloc[3] and out.iloc[2] is out.iloc[5]
    numbers = distinct_objects(pd.Series([2.0, None, 2.0], dtype=object), str)
    assert numbers.tolist() == ["2.0", None, "2.0"] and numbers.iloc[0] is numbers.iloc[2]


@pytest.mark.parametrize(
    "values",
    [
        ["b", "a", "b", None, "a", "c"],
        ["z", None, "z", "y"],
        [None, None],
        ["solo"],
    ],
)
def test_most_frequent_picks_what_scikit_learns_imputer_picks(values):
    from sklearn.impute import SimpleImputer

    column = pd.Series(values, dtype=object)
    imputer = SimpleImputer(strategy="most_frequent", missing_values=None, keep_empty_features=True)
    expected = imputer.fit(column.to_numpy(dtype=object).reshape(-1, 1)).statistics_[0]
    assert str(most_frequent(column)) == str(expected)


@pytest.mark.parametrize("seed", range(8))
def test_duplicated_rows_says_what_pandas_duplicated_says(seed):
    rng = np.random.default_rng(seed)
    n = 300
    frame = pd.DataFrame(
        {
            "x": rng.integers(0, 3, n).astype(float),
            "colour": rng.choice(np.array(["red", "blue", None], dtype=object), n),
            "k": rng.integers(0, 2, n),
        }
    )
    frame.loc[rng.random(n) < 0.2, "x"] = np.nan
    frame.loc[rng.random(n) < 0.1, "colour"] = np.nan  # None and NaN both count as missing
    frame.loc[rng.random(n) < 0.1, "x"] = -0.0  # equal to 0.0
    expected = frame.duplicated().to_numpy()
    assert 0 < expected.sum() < n
    np.testing.assert_array_equal(duplicated_rows(frame), expected)
    backwards = frame.iloc[::-1]
    np.testing.assert_array_equal(duplicated_rows(backwards), backwards.duplicated().to_numpy())


def test_duplicates_are_dropped_only_when_there_are_some():
    frame = frame_with_gaps()
    once, report = clean_table(frame, "y", "classification")
    assert report.duplicate_rows == 0 and len(once) == len(frame)
    twice = pd.concat([frame, frame.iloc[[5, 5, 7]]], ignore_index=True)
    clean, report = clean_table(twice, "y", "classification")
    assert report.duplicate_rows == 3
    pd.testing.assert_frame_equal(clean, once)


def test_cleaning_leaves_the_callers_frame_as_it_was():
    frame = frame_with_gaps()
    before = frame.copy()
    clean_table(frame, "y", "classification", CleaningPolicy(missing="median"))
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
@pytest.mark.parametrize(
    "values",
    [
        [1.0, np.nan, 3.0, 3.0, 10.0],
        [2.0, 1.0, 2.0, 1.0, np.nan],  # tied: the smaller one
        [np.nan, np.nan],  # nothing present
        [5.5],
    ],
)
def test_fill_number_is_what_scikit_learns_imputer_fills(strategy, values):
    from sklearn.impute import SimpleImputer

    column = np.asarray(values, dtype="float64")
    imputer = SimpleImputer(
        strategy=strategy, fill_value=0.0 if strategy == "constant" else None,
        keep_empty_features=True,
    ).fit(column.reshape(-1, 1))  # fmt: skip
    assert fill_number(column, strategy) == pytest.approx(float(imputer.statistics_[0]))
