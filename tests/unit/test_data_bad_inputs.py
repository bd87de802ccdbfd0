"""The catalogue of bad inputs: each ends in one UserError line that names the problem, or (a
few unreadable files among many, an empty column) is handled with a warning or a report line.

A case builds its input under tmp_path and returns a call that reads, checks and ingests it
the way the CLI and the ingest step do.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kerasflow import settings
from kerasflow.components.ingest_clean import core as ingest
from kerasflow.components.normalize_split import core as split
from kerasflow.data.sources import check_source, read_source
from kerasflow.runtime.errors import UserError
from kerasflow.settings import IngestSettings, SplitSettings

pytestmark = pytest.mark.unit
pytest_plugins = ["tests.gcs_emulator"]


def ingest_file(path, label="y", **options):
    """What the CLI check and the ingest step do with a source."""

    def call():
        check_source(str(path), label)
        opts = IngestSettings(**options)
        raw = read_source(str(path), label, modality=opts.modality, text_column=opts.text_column)
        return ingest.build_bundle(raw, options=opts)

    return call


def table(tmp_path, text, name="d.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def rows(n, label=lambda i: "ab"[i % 2]):
    return "a,b,y\n" + "".join(f"{i * 1.5},{(i * 7) % 5 * 0.5},{label(i)}\n" for i in range(n))


def png_bytes(value=0, size=(8, 8)):
    buf = io.BytesIO()
    Image.fromarray(np.full(size, value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def image_tree(tmp_path, classes=("cat", "dog"), per_class=4, broken=0):
    root = tmp_path / "imgs"
    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            data = b"not an image" if c * per_class + i < broken else png_bytes(i * 20 + c)
            (root / cls / f"{i}.png").write_bytes(data)
    return root


def case_empty(tmp_path):
    return ingest_file(table(tmp_path, ""))


def case_header_only(tmp_path):
    return ingest_file(table(tmp_path, "a,b,y\n"))


def case_binary_garbage(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(bytes(range(256)) * 16)
    return ingest_file(path)


def case_wrong_delimiter(tmp_path):
    return ingest_file(table(tmp_path, rows(20).replace(",", ":")))


def case_missing_label_column(tmp_path):
    return ingest_file(table(tmp_path, rows(20)), label="price")


def case_no_label_given(tmp_path):
    return ingest_file(table(tmp_path, rows(20)), label="")


def case_one_class(tmp_path):
    return ingest_file(table(tmp_path, rows(30, lambda i: "x")), task="classification")


def case_tiny_class(tmp_path):
    return ingest_file(table(tmp_path, rows(30, lambda i: "b" if i == 0 else "a")))


def case_all_nan_label(tmp_path):
    return ingest_file(table(tmp_path, rows(30, lambda i: "")))


def case_too_few_rows(tmp_path):
    return ingest_file(table(tmp_path, rows(6)))


def case_no_usable_feature(tmp_path):
    text = "id,site,y\n" + "".join(f"{i},A,{'ab'[i % 2]}\n" for i in range(30))
    return ingest_file(table(tmp_path, text))


def case_text_regression_label(tmp_path):
    return ingest_file(table(tmp_path, rows(30, lambda i: f"w{i}")), task="regression")


def case_ragged_rows(tmp_path):
    return ingest_file(table(tmp_path, "a,b,y\n1,2,a\n1,2,3,4,5,6\n" + rows(10)[6:]))


def case_duplicate_columns(tmp_path):
    return ingest_file(table(tmp_path, "a,a,y\n" + rows(20)[6:]))


def case_bad_parquet(tmp_path):
    return ingest_file(table(tmp_path, "PAR1 but not really", "d.parquet"))


def case_broken_json_lines(tmp_path):
    text = '{"a": 1, "y": "a"}\n{"a": 2, "y": "b"}\n{"a": 3, "y": \n'
    return ingest_file(table(tmp_path, text, "d.jsonl"))


def case_npz_without_y(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 3)))
    return ingest_file(tmp_path / "d.npz")


def case_npz_lengths_differ(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 3)), y=np.zeros(4))
    return ingest_file(tmp_path / "d.npz")


def case_npz_garbage(tmp_path):
    return ingest_file(table(tmp_path, "no zip here", "d.npz"))


def case_unsupported_format(tmp_path):
    return ingest_file(table(tmp_path, "spreadsheet", "d.xlsx"))


def case_missing_path(tmp_path):
    return ingest_file(tmp_path / "nowhere.csv")


def case_images_without_class_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(png_bytes())
    return ingest_file(tmp_path / "flat")


def case_images_of_one_class(tmp_path):
    return ingest_file(image_tree(tmp_path, classes=("cat",), per_class=12))


def case_many_unreadable_images(tmp_path):
    return ingest_file(image_tree(tmp_path, per_class=8, broken=3))


def case_only_unreadable_images(tmp_path):
    return ingest_file(image_tree(tmp_path, broken=8))


def case_empty_text_column(tmp_path):
    text = "text,y\n" + "".join(f",{'ab'[i % 2]}\n" for i in range(20))
    return ingest_file(table(tmp_path, text), modality="text", text_column="text")


def case_missing_time_column(tmp_path):
    path = table(tmp_path, rows(20))
    return lambda: check_source(str(path), "y", time_column="when")


def case_time_column_not_dates(tmp_path):
    text = "when,a,y\n" + "".join(f"soon{i},{i * 1.5},{i * 0.5}\n" for i in range(30))
    call = ingest_file(table(tmp_path, text), time_column="when")
    return lambda: split.split_bundle(
        call()[0], SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0)
    )


def case_missing_schema_file(tmp_path):
    path = table(tmp_path, rows(20))
    return lambda: check_source(str(path), "y", schema=str(tmp_path / "schema.json"))


def case_unknown_augmentation(tmp_path):
    return lambda: settings.RunSettings.from_values({"augment_methods": "rotation,blur"})


def case_bad_image_size(tmp_path):
    return lambda: settings.RunSettings.from_values({"image_size": "big"})


CASES = [
    (case_empty, "d.csv is empty"),
    (case_header_only, "d.csv has a header but no rows"),
    (case_binary_garbage, "d.csv is not a text table (it holds binary data)"),
    (case_wrong_delimiter, "only one column was found: is the delimiter one of"),
    (case_missing_label_column, "label column 'price' not found in d.csv"),
    (case_no_label_given, "--label is required for table data"),
    (case_one_class, "the label has only one class ('x')"),
    (case_tiny_class, "too few rows per class ('b': 1); each class needs at least 3"),
    (case_all_nan_label, "label column 'y' has no values"),
    (case_too_few_rows, "too few rows after cleaning (6); at least 10 are needed"),
    (case_no_usable_feature, "no usable feature columns left after cleaning"),
    (case_text_regression_label, "regression label 'y' holds values that are not numbers"),
    (case_ragged_rows, "cannot parse d.csv"),
    (case_duplicate_columns, "d.csv has duplicate column names"),
    (case_bad_parquet, "d.parquet is not a readable Parquet file"),
    (case_broken_json_lines, "d.jsonl line 3 is not valid JSON"),
    (case_npz_without_y, "d.npz must hold arrays 'x' and 'y'"),
    (case_npz_lengths_differ, "d.npz: x has 5 rows but y has 4"),
    (case_npz_garbage, "d.npz is not a readable NumPy .npz file"),
    (case_unsupported_format, "unsupported data format"),
    (case_missing_path, "data not found"),
    (case_images_without_class_folders, "must hold one subfolder per class"),
    (case_images_of_one_class, "the label has only one class ('cat')"),
    (case_many_unreadable_images, "3 of 16 image files cannot be read"),
    (case_only_unreadable_images, "none of the 8 image files can be read"),
    (case_empty_text_column, "text column 'text' holds no text"),
    (case_missing_time_column, "time column 'when' not found in d.csv"),
    (case_time_column_not_dates, "time column 'when' holds values that are not dates"),
    (case_missing_schema_file, "schema file not found"),
    (case_unknown_augmentation, "unknown augmentation method 'blur'"),
    (case_bad_image_size, "image size 'big' must be N or HxW"),
]


@pytest.mark.parametrize(("make", "message"), CASES, ids=[c[0].__name__[5:] for c in CASES])
def test_bad_input_names_the_problem_in_one_line(tmp_path, make, message):
    call = make(tmp_path)
    with pytest.raises(UserError) as err:
        call()
    text = str(err.value)
    assert message in text
    assert "\n" not in text


def test_a_missing_gs_object_is_refused_before_the_run(gcs):
    with pytest.raises(UserError, match=f"data not found: gs://{gcs.bucket}/none.csv"):
        check_source(f"gs://{gcs.bucket}/none.csv", "y")
    with pytest.raises(UserError, match="data not found"):
        read_source(f"gs://{gcs.bucket}/none.csv", "y")


def test_a_few_unreadable_images_among_many_are_skipped_with_a_count(tmp_path):
    root = image_tree(tmp_path, per_class=10, broken=1)
    truncated = root / "dog" / "9.png"
    truncated.write_bytes(png_bytes(value=7, size=(64, 64))[:60])  # a valid header, cut data
    result, report = ingest_file(root)()
    assert report.warnings[0].startswith("skipped 2 unreadable image file(s) of 20")
    assert len(result.parts["data"]) == 18
    assert result.meta["image_shape"] == [8, 8, 1]


def test_an_all_nan_column_is_removed_and_reported(tmp_path):
    frame = pd.DataFrame(
        {"a": np.arange(30) * 1.5, "gone": [np.nan] * 30, "y": ["a", "b", "c"] * 10}
    )
    frame.to_csv(tmp_path / "d.csv", index=False)
    result, report = ingest_file(tmp_path / "d.csv")()
    assert report.cleaning.columns_removed == {"gone": "empty (no values)"}
    assert [f["name"] for f in result.meta["features"]] == ["a"]
