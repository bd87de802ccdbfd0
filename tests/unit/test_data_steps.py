import numpy as np
import pandas as pd
import pytest

from kerasflow import bundle
from kerasflow import constants as C
from kerasflow.components.augment import core as augment
from kerasflow.components.ingest_clean import core as ingest
from kerasflow.components.normalize_split import core as split
from kerasflow.errors import UserError
from kerasflow.sources import RawData, check_source, read_source

pytestmark = pytest.mark.unit


def messy_frame(n=60, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "size": rng.normal(10, 2, n).round(3).astype(object),
            "colour": rng.choice(["red", "green", None], n),
            "constant": 1.0,
            "label": rng.choice(["cat", "dog"], n),
        }
    )
    frame.loc[3, "size"] = "n/a"
    frame.loc[4, "size"] = "?"
    frame.loc[5, "size"] = np.nan
    frame.loc[6, "label"] = None
    return pd.concat([frame, frame.iloc[:5]], ignore_index=True)


def test_clean_table_counts_every_change():
    raw = RawData(frame=messy_frame(), label="label")
    clean, report = ingest.clean_table(raw, "classification")
    assert report["junk_values"] == {"size": 4}  # two of them in duplicated rows
    assert report["duplicate_rows"] == 5
    assert report["rows_without_label"] == 1
    assert report["columns_removed"] == {"constant": "constant"}
    assert report["imputed"]["size"]["strategy"] == "median"
    assert report["imputed"]["colour"]["strategy"] == "most_frequent"
    assert len(clean) == report["rows_out"] == 59
    assert clean["size"].dtype == float and not clean.isna().any().any()


def test_build_bundle_encodes_string_labels_and_feature_kinds():
    raw = RawData(frame=messy_frame(), label="label")
    result, _ = ingest.build_bundle(raw)
    meta = result.meta
    assert meta[C.META_TASK] == "classification"
    assert meta[C.META_CLASS_NAMES] == ["cat", "dog"]
    kinds = {f["name"]: f["kind"] for f in meta[C.META_FEATURES]}
    assert kinds == {"size": "numeric", "colour": "categorical"}
    assert set(result.parts["data"].frame["label"]) == {0, 1}


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([1.5, 2.25, 3.0, 4.75] * 10, "regression"),
        ([0, 1, 2] * 10, "classification"),
        (["a", "b"] * 10, "classification"),
        (list(range(40)), "regression"),
    ],
)
def test_infer_task(values, task):
    raw = RawData(frame=pd.DataFrame({"y": values}), label="y")
    assert ingest.infer_task(raw, np.asarray(values)) == task


def test_one_class_and_tiny_classes_are_refused():
    frame = pd.DataFrame({"x": range(20), "y": ["a"] * 20})
    with pytest.raises(UserError, match="only one class"):
        ingest.build_bundle(RawData(frame=frame, label="y"), task="classification")
    frame["y"] = ["a"] * 19 + ["b"]
    with pytest.raises(UserError, match="a class has only 1 row"):
        ingest.build_bundle(RawData(frame=frame, label="y"), task="classification")


def test_builtin_digits_is_an_image_bundle_without_duplicates():
    raw = read_source("builtin:digits")
    result, report = ingest.build_bundle(raw)
    part = result.parts["data"]
    assert result.meta[C.META_MODALITY] == "image"
    assert result.meta[C.META_IMAGE_SHAPE] == [8, 8, 1]
    assert report["rows_in"] == 1797 and len(part) == report["rows_out"] > 1700
    flat = part.x.reshape(len(part), -1)
    assert len(np.unique(np.c_[flat, part.y], axis=0)) == len(part)


def test_source_checks(tmp_path):
    with pytest.raises(UserError, match="unknown builtin dataset 'mnist'"):
        check_source("builtin:mnist", "")
    with pytest.raises(UserError, match="data not found"):
        check_source(str(tmp_path / "none.csv"), "y")
    csv = tmp_path / "d.csv"
    csv.write_text("a;b;y\n1;2;3\n")
    with pytest.raises(UserError, match="label column 'target' not found"):
        check_source(str(csv), "target")
    with pytest.raises(UserError, match="--label is required"):
        check_source(str(csv), "")
    check_source(str(csv), "y")
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(UserError, match="is empty"):
        check_source(str(empty), "y")
    garbage = tmp_path / "g.csv"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(UserError, match="not a text table"):
        check_source(str(garbage), "y")
    header = tmp_path / "h.csv"
    header.write_text("a,b,y\n")
    with pytest.raises(UserError, match="header but no rows"):
        read_source(str(header), "y")


def test_split_is_stratified_seeded_and_fits_on_train_only():
    raw = read_source("builtin:iris")
    data, _ = ingest.build_bundle(raw)
    a = split.split_bundle(data, 0.2, 0.2, seed=7)
    b = split.split_bundle(data, 0.2, 0.2, seed=7)
    for name in C.SPLITS:
        pd.testing.assert_frame_equal(a.parts[name].frame, b.parts[name].frame)
    sizes = a.meta["split_sizes"]
    assert sum(sizes.values()) == len(data.parts["data"])
    for name in C.SPLITS:
        counts = np.bincount(a.parts[name].frame["target"])
        assert counts.max() - counts.min() <= 1
    col = a.meta[C.META_FEATURES][0]
    train_mean = a.parts["train"].frame[col["name"]].mean()
    assert a.meta[C.META_NORMALIZATION][col["input"]]["mean"] == pytest.approx(train_mean)


def test_augment_images_is_seeded_and_keeps_originals():
    rng = np.random.default_rng(0)
    x = rng.random((10, 8, 8, 1)).astype("float32")
    y = np.arange(10)
    ax, ay = augment.augment_images(x, y, factor=2, seed=3)
    bx, _ = augment.augment_images(x, y, factor=2, seed=3)
    assert ax.shape == (30, 8, 8, 1) and list(ay) == list(y) * 3
    np.testing.assert_array_equal(ax, bx)
    np.testing.assert_array_equal(ax[:10], x)
    assert not np.allclose(ax[10:20], x)


def test_augment_table_adds_noise_to_numeric_columns_only():
    raw = RawData(frame=messy_frame(), label="label")
    data, _ = ingest.build_bundle(raw)
    frame = data.parts["data"].frame
    out = augment.augment_table(frame, data.meta, factor=1, seed=0)
    assert len(out) == 2 * len(frame)
    copy = out.iloc[len(frame) :].reset_index(drop=True)
    assert (copy["colour"] == frame["colour"]).all()
    assert (copy["label"] == frame["label"]).all()
    assert not np.allclose(copy["size"], frame["size"])
    assert np.allclose(copy["size"], frame["size"], atol=frame["size"].std())


def test_bundle_round_trip(tmp_path):
    data, _ = ingest.build_bundle(read_source("builtin:wine"))
    bundle.save(tmp_path, data)
    back = bundle.load(tmp_path, ("data",))
    assert back.meta == data.meta
    pd.testing.assert_frame_equal(back.parts["data"].frame, data.parts["data"].frame)
