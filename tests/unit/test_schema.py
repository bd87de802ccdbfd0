"""Schemas: inferred from training data, saved, and new data validated against them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerasflow.data import schema as S
from kerasflow.data.cleaning import CleaningReport, coerce_types
from kerasflow.runtime.errors import UserError

pytestmark = pytest.mark.unit


def training_frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.uniform(18, 90, n).round(),
            "plan": rng.choice(["basic", "plus", "pro"], n),
            "note": rng.choice(["x", None], n, p=[0.6, 0.4]),
            "id": np.arange(n),
            "churn": rng.choice(["yes", "no"], n),
        }
    )
    return coerce_types(frame, CleaningReport())


def inferred(frame):
    return S.infer_table_schema(
        frame,
        "churn",
        "classification",
        ignored={"id": "identifier (unique per row)"},
        class_names=["no", "yes"],
        max_missing_share=0.2,
        max_anomaly_share=0.02,
    )


def test_inferred_schema_records_types_ranges_categories_and_missing_shares(tmp_path):
    frame = training_frame()
    schema = inferred(frame)
    age, plan, note = (schema["columns"][c] for c in ("age", "plan", "note"))
    assert age["type"] == "numeric" and age["min"] == frame["age"].min()
    assert plan["categories"] == ["basic", "plus", "pro"]
    assert 0.3 < note["missing_share"] < 0.5
    assert note["max_missing_share"] == note["missing_share"]  # its own share is its limit
    assert age["max_missing_share"] == 0.2
    assert schema["columns"]["id"]["role"] == "ignored"
    assert schema["label"]["classes"] == ["no", "yes"]
    S.save_schema(schema, str(tmp_path / "s" / "schema.json"))
    assert S.load_schema(str(tmp_path / "s")) == schema  # a folder artifact or the file
    assert S.load_schema(str(tmp_path / "s" / "schema.json")) == schema


def test_conforming_new_data_have_no_anomalies():
    schema = inferred(training_frame(seed=0))
    fresh = training_frame(seed=1).assign(note="x")
    fresh["age"] = fresh["age"].clip(schema["columns"]["age"]["min"], 89)
    assert S.validate_table(schema, fresh.drop(columns=["id"])) == []


def test_every_kind_of_drift_is_named():
    schema = inferred(training_frame())
    new = training_frame(seed=2).drop(columns=["note"])
    new["extra"] = 1.0
    new.loc[:9, "age"] = 200.0  # 5% out of range
    new.loc[:5, "plan"] = "enterprise"  # 3% new category
    new.loc[:80, "age"] = np.nan  # 40% missing
    new.loc[0, "churn"] = "maybe"
    kinds = {(a.column, a.kind) for a in S.validate_table(schema, new)}
    assert kinds == {
        ("note", "missing_column"),
        ("extra", "new_column"),
        ("plan", "new_category"),
        ("age", "missing_share"),
        ("churn", "new_class"),
    }
    new = training_frame(seed=2).assign(note="x")
    new.loc[:9, "age"] = 200.0
    (anomaly,) = S.validate_table(schema, new)
    assert anomaly.kind == "out_of_range" and "5.0% of values outside" in anomaly.message


def test_small_shares_stay_under_the_anomaly_limit():
    schema = inferred(training_frame())
    new = training_frame(seed=3).assign(note="x")
    new.loc[0, "age"] = 500.0
    new.loc[1, "plan"] = "enterprise"
    assert S.validate_table(schema, new) == []


def test_a_numeric_column_turned_text_is_one_type_anomaly():
    schema = inferred(training_frame())
    new = training_frame(seed=4).assign(note="x")
    new["age"] = ["old"] * len(new)
    anomalies = S.validate_table(schema, new)
    assert [(a.column, a.kind) for a in anomalies] == [("age", "type")]
    assert "now holds text such as ('old')" in anomalies[0].message


def test_anomalies_raise_one_line_naming_each():
    anomalies = [
        S.Anomaly("a", "missing_column", "column 'a' is missing"),
        S.Anomaly("b", "new_column", "column 'b' is new"),
    ]
    with pytest.raises(UserError) as err:
        S.raise_anomalies(anomalies, "the data")
    assert str(err.value) == "2 anomalies in the data: column 'a' is missing; column 'b' is new"
    assert "\n" not in str(err.value)


def test_label_checks_and_image_schema():
    assert S.check_labels({"a": 10}, 3)[0].kind == "one_class"
    (few,) = S.check_labels({"a": 10, "b": 2}, 3)
    assert few.kind == "class_rows" and "'b': 2" in few.message
    x = np.zeros((4, 8, 8, 1), "float32")
    schema = S.infer_array_schema(x, ["cat", "dog"], "class")
    assert S.validate_images(schema, x, ["cat", "dog"]) == []
    kinds = {a.kind for a in S.validate_images(schema, np.zeros((4, 9, 8, 3)), ["cat", "eel"])}
    assert kinds == {"image_shape", "new_class"}


def test_a_file_that_is_not_a_schema_is_refused(tmp_path):
    (tmp_path / "s.json").write_text('{"columns": {}}')
    with pytest.raises(UserError, match="is not a kerasflow schema"):
        S.load_schema(str(tmp_path / "s.json"))
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UserError, match="is not valid JSON"):
        S.load_schema(str(tmp_path / "bad.json"))
