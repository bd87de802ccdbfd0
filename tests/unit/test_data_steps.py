"""The cores of the three data steps: ingest/clean, normalize/split, augment."""

import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.components.augment import core as augment
from kerasflow.components.ingest_clean import core as ingest
from kerasflow.components.normalize_split import core as split
from kerasflow.data import artifacts
from kerasflow.data.sources import RawData, read_source
from kerasflow.runtime.errors import UserError
from kerasflow.settings import AugmentSettings, IngestSettings, SplitSettings

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


def test_build_bundle_cleans_counts_and_encodes_string_labels():
    result, report = ingest.build_bundle(RawData(frame=messy_frame(), label="label"))
    c = report.cleaning
    assert c.junk_values == {"size": 4}  # two of them in duplicated rows
    assert c.duplicate_rows == 5 and c.rows_without_label == 1
    assert c.columns_removed == {"constant": "constant (1.0)"}
    # Missing values are counted here and imputed after the split, fitted on train.
    assert set(c.missing) == {"size", "colour"} and not c.imputed
    meta = result.meta
    assert meta[C.META_TASK] == "classification"
    assert meta[C.META_CLASS_NAMES] == ["cat", "dog"]
    assert {f["name"]: f["kind"] for f in meta[C.META_FEATURES]} == {
        "size": "numeric",
        "colour": "categorical",
    }
    frame = result.parts["data"].frame
    assert len(frame) == c.rows_out == 59 and frame.isna().sum().sum() == sum(c.missing.values())
    assert set(frame["label"]) == {0, 1}
    assert sum(report.class_counts.values()) == 59
    text = ingest.render_report("messy.csv", meta, report)
    assert "| duplicate_rows | 5 |" in text and "| constant | constant (1.0) |" in text
    assert f"| size | {c.missing['size']} |" in text
    splits = split.split_bundle(result, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0))
    assert not any(p.frame.isna().any().any() for p in splits.parts.values())
    fitted = splits.meta[split.CLEANING_REPORT]["imputed"]
    assert fitted["size"]["strategy"] == "median"
    assert fitted["colour"]["strategy"] == "most_frequent"
    assert sum(v["count"] for v in fitted.values()) == sum(c.missing.values())
    assert "| size | " in split.render_report(splits.meta)


@pytest.mark.parametrize(
    ("values", "task"),
    [
        ([1.5, 2.25, 3.0, 4.75] * 10, "regression"),
        ([0, 1, 2] * 10, "classification"),
        (["a", "b"] * 10, "classification"),
        (["0", "1"] * 10, "classification"),
        (["1.5", "2.25", "3.0", "4.75"] * 10, "regression"),
        (list(range(40)), "regression"),
    ],
)
def test_infer_task(values, task):
    raw = RawData(frame=pd.DataFrame({"y": values}), label="y")
    assert ingest.infer_task(raw, np.asarray(values)) == task


def test_one_class_and_tiny_classes_are_refused():
    frame = pd.DataFrame({"x": np.arange(20) * 1.5, "y": ["a"] * 20})
    with pytest.raises(UserError, match="the label has only one class"):
        ingest.build_bundle(RawData(frame=frame, label="y"), task="classification")
    frame["y"] = ["a"] * 19 + ["b"]
    with pytest.raises(UserError, match=r"too few rows per class \('b': 1\)"):
        ingest.build_bundle(RawData(frame=frame, label="y"), task="classification")


def test_builtin_digits_is_an_image_bundle_without_duplicates():
    result, report = ingest.build_bundle(read_source("builtin:digits"))
    part = result.parts["data"]
    assert result.meta[C.META_MODALITY] == "image"
    assert result.meta[C.META_IMAGE_SHAPE] == [8, 8, 1]
    assert report.cleaning.rows_in == 1797 and len(part) == report.cleaning.rows_out > 1700
    flat = part.x.reshape(len(part), -1)
    assert len(np.unique(np.c_[flat, part.y], axis=0)) == len(part)
    assert report.schema["image_shape"] == [8, 8, 1]


def test_new_data_are_validated_against_a_saved_schema_before_cleaning():
    first, report = ingest.build_bundle(RawData(frame=messy_frame(), label="label"))
    later = messy_frame()
    later["colour"] = "purple"
    with pytest.raises(ingest.AnomalyError, match="new categories \\('purple'\\)") as err:
        ingest.build_bundle(RawData(frame=later, label="label"), saved_schema=report.schema)
    assert [a.kind for a in err.value.anomalies] == ["new_category"]
    again, _ = ingest.build_bundle(
        RawData(frame=messy_frame().iloc[::-1], label="label"), saved_schema=report.schema
    )
    assert again.meta[C.META_CLASS_NAMES] == first.meta[C.META_CLASS_NAMES]


def test_clip_bounds_reach_the_normalization_statistics():
    frame = messy_frame()
    frame.loc[10, "size"] = 1e6
    data, _ = ingest.build_bundle(RawData(frame=frame, label="label"))
    assert "clip_bounds" not in data.meta  # bounds are fitted on the train split
    meta = split.split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0)).meta
    assert meta[split.CLEANING_REPORT]["outliers"]["size"]["count"] == 1
    assert meta[C.META_NORMALIZATION]["size"]["clip"] == meta["clip_bounds"]["size"]


def test_split_is_stratified_seeded_and_fits_on_train_only():
    data, _ = ingest.build_bundle(read_source("builtin:iris"))
    a = split.split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=7))
    b = split.split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=7))
    for name in C.SPLITS:
        pd.testing.assert_frame_equal(a.parts[name].frame, b.parts[name].frame)
    sizes = a.meta["split_sizes"]
    assert sum(sizes.values()) == len(data.parts["data"])
    assert a.meta["split"] == {"strategy": "stratified"}
    for name in C.SPLITS:
        counts = np.bincount(a.parts[name].frame["target"])
        assert counts.max() - counts.min() <= 1
    col = a.meta[C.META_FEATURES][0]
    train_mean = a.parts["train"].frame[col["name"]].mean()
    assert a.meta[C.META_NORMALIZATION][col["input"]]["mean"] == pytest.approx(train_mean)
    assert set(a.meta["class_weights"]) == {"0", "1", "2"}


def test_minmax_scaling_is_a_normalization_onto_zero_one():
    data, _ = ingest.build_bundle(read_source("builtin:wine"))
    result = split.split_bundle(
        data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0, scaling="minmax")
    )
    feat = result.meta[C.META_FEATURES][0]
    s = result.meta[C.META_NORMALIZATION][feat["input"]]
    train = result.parts["train"].frame[feat["name"]]
    scaled = (train - s["mean"]) / np.sqrt(s["variance"])
    assert scaled.min() == pytest.approx(0.0) and scaled.max() == pytest.approx(1.0)


def test_time_split_puts_the_newest_rows_in_test():
    n = 60
    frame = pd.DataFrame(
        {
            "when": pd.date_range("2024-01-01", periods=n, freq="D").astype(str)[::-1],
            "x": np.arange(n) * 1.5,
            "y": [0.5 * i for i in range(n)],
        }
    )
    options = IngestSettings(time_column="when")
    data, _ = ingest.build_bundle(RawData(frame=frame, label="y"), options=options)
    assert "when" not in artifacts.feature_columns(data.meta)
    result = split.split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0))
    assert result.meta["split"] == {"strategy": "time", "column": "when"}
    train, test = result.parts["train"].frame, result.parts["test"].frame
    assert "when" not in train.columns
    assert train["x"].min() > test["x"].max()  # x falls as time goes on


def test_folds_keep_val_as_fold_zero_and_cut_other_folds_from_the_same_rows():
    data, _ = ingest.build_bundle(read_source("builtin:iris"))
    result = split.split_bundle(
        data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0, folds=4)
    )
    meta, parts = result.meta, result.parts
    assert meta["folds"]["k"] == 4
    assert len(meta["folds"]["ids"]) == len(parts["train"]) + len(parts["val"])
    train0, val0 = artifacts.fold_parts(meta, parts["train"], parts["val"], 0)
    pd.testing.assert_frame_equal(val0.frame, parts["val"].frame.reset_index(drop=True))
    for fold in range(1, 4):
        train_k, val_k = artifacts.fold_parts(meta, parts["train"], parts["val"], fold)
        assert len(train_k) + len(val_k) == len(train0) + len(val0)
        assert abs(len(val_k) - len(val0)) <= 3


def test_smote_replaces_class_weights_and_balances_the_train_split():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "a": rng.normal(size=120),
            "b": rng.normal(size=120),
            "kind": rng.choice(["u", "v"], 120),
            "y": ["rare"] * 20 + ["common"] * 100,
        }
    )
    data, _ = ingest.build_bundle(RawData(frame=frame, label="y"))
    result = split.split_bundle(
        data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0, imbalance="smote")
    )
    assert "class_weights" not in result.meta and result.meta["imbalance"] == "smote"
    before = np.bincount(result.parts["train"].frame["y"])
    summary = augment.AugmentSummary()
    out = augment.augment_part(
        result.meta,
        result.parts["train"],
        AugmentSettings(augment_factor=0, seed=0),
        summary=summary,
    )
    assert np.bincount(out.frame["y"]).tolist() == [before.max(), before.max()]
    assert summary.oversampled == before.max() - before.min()
    assert set(out.frame["kind"]) <= {"u", "v"}


@pytest.mark.parametrize(
    "methods", [("rotation",), ("zoom",), ("translation",), ("flip",), ("contrast",), ("noise",)]
)
def test_each_image_method_changes_images_within_range(methods):
    rng = np.random.default_rng(0)
    x = (rng.random((6, 8, 8, 1)) * 16).astype("float32")
    y = np.arange(6)
    ax, ay = augment.augment_images(x, y, factor=2, seed=3, methods=methods)
    bx, _ = augment.augment_images(x, y, factor=2, seed=3, methods=methods)
    assert ax.shape == (18, 8, 8, 1) and list(ay) == list(y) * 3
    np.testing.assert_array_equal(ax, bx)
    np.testing.assert_array_equal(ax[:6], x)
    assert not np.allclose(ax[6:12], x)
    assert ax.min() >= x.min() and ax.max() <= x.max()


def test_table_methods_noise_mixup_smote():
    data, _ = ingest.build_bundle(RawData(frame=messy_frame(), label="label"))
    splits = split.split_bundle(data, SplitSettings(val_fraction=0.1, test_fraction=0.1, seed=0))
    frame, meta = splits.parts["train"].frame, splits.meta
    out = augment.augment_table(frame, meta, factor=3, seed=0, methods=("noise", "mixup", "smote"))
    n = len(frame)
    assert len(out) == 4 * n
    noise, mixup, smote = (out.iloc[k * n : (k + 1) * n] for k in (1, 2, 3))
    assert (noise["label"].to_numpy() == frame["label"].to_numpy()).all()
    assert not np.allclose(noise["size"], frame["size"])
    assert (mixup["label"].to_numpy() == frame["label"].to_numpy()).all()
    for cls in (0, 1):  # mixed within a class: values stay inside the class's range
        rows = frame["label"] == cls
        assert (
            mixup["size"][rows.to_numpy()]
            .between(frame["size"][rows].min(), frame["size"][rows].max())
            .all()
        )
    assert np.bincount(smote["label"]).tolist() == np.bincount(frame["label"]).tolist()
    assert set(smote["colour"]) <= set(frame["colour"])


def test_text_edits_use_the_word_map_and_are_seeded():
    rng = np.random.default_rng(0)
    words = {"good": ["fine", "great"]}
    text = "a good film with a good cast"
    assert augment.edit_text(text, "synonym", rng, words).count("good") < 2
    inserted = augment.edit_text(text, "insertion", rng, words).split()
    assert len(inserted) == 8 and set(inserted) - set(text.split()) <= {"fine", "great"}
    long = " ".join(f"w{i}" for i in range(60))
    assert 30 < len(augment.edit_text(long, "deletion", rng, words).split()) < 60
    swapped = augment.edit_text(text, "swap", rng, words)
    assert sorted(swapped.split()) == sorted(text.split())
    punctuated = "Good, the film was good. Really GOOD! " * 5
    for seed in range(20):  # every edit, on long texts with several known words
        for method in ("deletion", "swap", "insertion", "synonym"):
            edited = augment.edit_text(punctuated, method, np.random.default_rng(seed), words)
            assert edited
            if method == "swap":  # a swap of two equal words may leave the text as it was
                assert sorted(edited.split()) == sorted(punctuated.split())
            else:
                assert edited != punctuated
    frame = pd.DataFrame({"t": [text] * 4, "y": [0, 1, 0, 1]})
    meta = {C.META_FEATURES: [{"name": "t", "input": "text", "kind": "text"}]}
    a = augment.augment_text(frame, meta, 2, 5, ("deletion", "swap"), words)
    b = augment.augment_text(frame, meta, 2, 5, ("deletion", "swap"), words)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 12 and (a["t"].iloc[4:] != text).any()


def test_synonyms_file_is_read_from_json_or_yaml(tmp_path):
    (tmp_path / "w.yaml").write_text("Good: [fine, great]\nbad: poor\n")
    assert augment.load_synonyms(str(tmp_path / "w.yaml")) == {
        "good": ["fine", "great"],
        "bad": ["poor"],
    }
    (tmp_path / "w.json").write_text('["not", "a", "map"]')
    with pytest.raises(UserError, match="must map words to synonyms"):
        augment.load_synonyms(str(tmp_path / "w.json"))


def test_previews_show_before_and_after():
    rng = np.random.default_rng(0)
    x = rng.random((10, 8, 8, 1)).astype("float32")
    ax, _ = augment.augment_images(x, np.arange(10), 2, 0)
    fig = augment.image_preview(ax, 2)
    assert len(fig.axes) == 3 * 8
    data, _ = ingest.build_bundle(RawData(frame=messy_frame(), label="label"))
    frame = data.parts["data"].frame
    after = augment.augment_table(frame, data.meta, 1, 0)
    text = augment.table_summary(data.meta, frame, after)
    assert f"{len(frame)} -> {2 * len(frame)} rows" in text and "| size |" in text


def test_bundle_round_trip(tmp_path):
    data, _ = ingest.build_bundle(read_source("builtin:wine"))
    artifacts.save(tmp_path, data)
    back = artifacts.load(tmp_path, ("data",))
    assert back.meta == data.meta
    pd.testing.assert_frame_equal(back.parts["data"].frame, data.parts["data"].frame)


def _every_dtype(n=10):
    return pd.DataFrame(
        {
            "i": np.arange(n),
            "f": np.linspace(0, 1, n),
            "o": pd.Series(["a", None] * (n // 2), dtype=object),
            "s": pd.Series(["x"] * n, dtype="str"),
            "b": [True, False] * (n // 2),
            "c": pd.Categorical(["p", "q"] * (n // 2)),
            "t": pd.date_range("2020-01-01", periods=n, tz="UTC"),
            "none": pd.Series([None] * n, dtype=object),
        },
        index=np.arange(n) + 100,
    )


@pytest.mark.parametrize("rows", [10, 1, 0])
def test_tables_are_written_in_row_groups_and_read_back_as_pandas_reads_them(
    tmp_path, monkeypatch, rows
):
    import pyarrow.parquet as pq

    monkeypatch.setattr(artifacts, "ROW_GROUP_ROWS", 3)
    frame = _every_dtype().iloc[:rows]
    with open(tmp_path / "ours.parquet", "wb") as fh:
        artifacts.write_parquet(frame, fh)
    frame.to_parquet(tmp_path / "pandas.parquet", index=False)
    assert pq.ParquetFile(tmp_path / "ours.parquet").num_row_groups == max(1, -(-rows // 3))
    expected = pd.read_parquet(tmp_path / "pandas.parquet")
    for name in ("ours", "pandas"):
        back = artifacts.read_parquet(tmp_path / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, expected)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ours.parquet"), expected)


def test_taking_a_table_apart_gives_the_splits_take_gives_and_empties_it():
    frame = _every_dtype(12)
    rows = {"train": np.array([0, 3, 4, 7, 8, 11]), "val": np.array([1, 5]), "test": np.array([2])}
    expected = {name: artifacts.Part(frame=frame).take(idx).frame for name, idx in rows.items()}
    part = artifacts.Part(frame=frame.copy())
    taken = part.take_apart(rows)
    for name in rows:
        pd.testing.assert_frame_equal(taken[name].frame, expected[name])
    assert len(part.frame.columns) == 0
    images = artifacts.Part(x=np.arange(24.0).reshape(12, 2), y=np.arange(12))
    np.testing.assert_array_equal(images.take_apart(rows)["val"].x, [[2.0, 3.0], [10.0, 11.0]])


def test_profile_counts_values_by_their_text_most_first():
    from kerasflow.data import profile

    values = pd.Series(["b", None, "a", "b", 1, "1", np.nan, "a", "c"], dtype=object)
    counts = profile.text_counts(values)
    assert list(counts.items()) == [("b", 2), ("a", 2), ("1", 2), ("c", 1)]
    unused = pd.Series(pd.Categorical(["x", "y", "x"], categories=["x", "y", "z"]))
    assert profile.text_counts(unused).to_dict() == {"x": 2, "y": 1}
    stats = profile.column_stats(pd.DataFrame({"colour": values}))
    assert stats[0]["top"] == "b" and stats[0]["count"] == 7
