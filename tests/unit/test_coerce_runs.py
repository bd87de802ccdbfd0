"""A table coerced as it is read, a run of rows at a time, equals the whole table coerced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerasflow.data import cleaning, readers
from kerasflow.data.sources import read_source
from kerasflow.runtime.errors import UserError

pytestmark = pytest.mark.unit


def write_table(path, rows: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)
    numbers = rng.normal(size=rows).round(4).astype(str)
    numbers[rng.random(rows) < 0.05] = "n/a"
    numbers[rng.random(rows) < 0.02] = " "
    # Numeric overall, but its first rows are mostly words: a run of them looks like text.
    late = rng.integers(0, 100, rows).astype(str)
    late[:40] = "oops"
    # Text overall, but its last rows are all numbers: a run of them looks numeric.
    early = np.asarray([f"code {i % 7}" for i in range(rows)], dtype=object)
    tail = rows // 5
    early[-tail:] = [str(i) for i in range(tail)]
    words = rng.choice(["red", " blue ", "Green", "?", "NULL", ""], rows)
    frame = pd.DataFrame(
        {
            "x": numbers,
            "late": late,
            "early": early,
            "color": words,
            "junk": rng.choice(["?", "-", "missing"], rows),
            "inf": rng.choice(["1.5", "inf", "-inf", "2"], rows),
            "label": rng.choice(["a", "b"], rows),
        }
    )
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("run_rows", [64, 333, 5000])
def test_coercing_runs_gives_the_whole_tables_coercion(tmp_path, monkeypatch, run_rows):
    path = write_table(tmp_path / "t.csv")
    monkeypatch.setattr(readers, "RUN_ROWS", run_rows)
    raw = read_source(str(path), "label", coerce=True)
    whole_report = cleaning.CleaningReport()
    whole = cleaning.coerce_types(readers.read_table(path), whole_report)
    pd.testing.assert_frame_equal(raw.frame, whole)
    assert raw.junk_values == whole_report.junk_values
    assert raw.frame["late"].dtype == "float64" and raw.frame["early"].dtype == object
    assert raw.junk_values["late"] == 40  # the words of a numeric column count as junk


def test_a_rereads_columns_judged_text_after_a_run_kept_them_as_numbers(tmp_path, monkeypatch):
    path = write_table(tmp_path / "t.csv")
    monkeypatch.setattr(readers, "RUN_ROWS", 100)
    asked = []

    def reread(names):
        asked.append(list(names))
        return readers.read_delimited_runs(path, names)

    frame = cleaning.coerce_chunks(
        readers.read_delimited_runs(path), cleaning.CleaningReport(), reread
    )
    assert asked == [["early"]]
    assert frame["early"].iloc[-1] == "199" and frame["early"].iloc[0] == "code 0"


def test_tables_that_may_be_text_are_read_whole_as_strings(tmp_path):
    path = tmp_path / "few.csv"
    reviews = [f"a {'good' if i % 2 else 'bad'} film, seen {i} times" for i in range(20)]
    pd.DataFrame({"review": reviews, "label": ["p", "n"] * 10}).to_csv(path, index=False)
    raw = read_source(str(path), "label", coerce=True)
    assert raw.junk_values is None and raw.modality == "text"
    wide = write_table(tmp_path / "wide.csv")
    assert read_source(str(wide), "label", coerce=True, text_column="color").junk_values is None
    assert read_source(str(wide), "label").junk_values is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,c,d,e,label\n", "has a header but no rows"),
        ("a,b,c,d,e,label\n1,2,3,4,5,x\n1,2,3,4,5,6,7\n", "cannot parse t.csv"),
    ],
)
def test_a_bad_table_read_in_runs_fails_as_a_whole_read_does(tmp_path, monkeypatch, text, message):
    path = tmp_path / "t.csv"
    path.write_text(text)
    monkeypatch.setattr(readers, "RUN_ROWS", 1)
    with pytest.raises(UserError, match=message):
        read_source(str(path), "label", coerce=True)
    with pytest.raises(UserError, match=message):
        readers.read_table(path)


def test_a_missing_label_is_named_before_the_table_is_read(tmp_path):
    path = write_table(tmp_path / "t.csv", rows=50)
    with pytest.raises(UserError, match="label column 'target' not found"):
        read_source(str(path), "target", coerce=True)
