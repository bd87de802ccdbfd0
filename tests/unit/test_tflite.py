"""TFLite exports: each variant converted from the SavedModel and checked against it."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow import constants as C
from kerasflow.modeling import builders, tflite
from kerasflow.modeling.export import export_saved_model
from tests.unit.test_tuning_train import HPARAMS

pytestmark = pytest.mark.unit

IMAGE_META = {
    "modality": "image",
    "task": "classification",
    "class_names": ["a", "b", "c"],
    "image_shape": [8, 8, 1],
    "normalization": {"image": {"mean": 0.0, "variance": 1.0}},
}


def test_compare_counts_agreeing_rows_and_scores_the_variant():
    reference = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    answers = np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])  # the last row flips
    out = tflite.compare(reference, answers, np.array([0, 1, 1]), "classification")
    assert out["agreement"] == pytest.approx(2 / 3)
    assert out["accuracy"] == 1.0
    assert out["max_abs_diff"] == pytest.approx(0.2)
    values = np.array([[0.0], [10.0], [5.0]])
    near = values + np.array([[0.05], [0.2], [0.0]])  # within 1% of the spread (0.1), or not
    out = tflite.compare(values, near, np.array([0.0, 10.0, 5.0]), "regression")
    assert out["agreement"] == pytest.approx(2 / 3)
    assert out["mae"] == pytest.approx(0.25 / 3)


def test_representative_rows_are_single_float_rows_of_a_seeded_sample():
    x = {"image": np.arange(50 * 4, dtype="float64").reshape(50, 2, 2)}
    rows = list(tflite.representative_rows(x, rows=10, seed=1)())
    assert len(rows) == 10
    assert all(r["image"].shape == (1, 2, 2) and r["image"].dtype == np.float32 for r in rows)
    assert [r["image"][0, 0, 0] for r in rows] == [
        r["image"][0, 0, 0] for r in tflite.representative_rows(x, rows=10, seed=1)()
    ]


@pytest.fixture(scope="module")
def image_export(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = {"image": rng.normal(size=(90, 8, 8, 1)).astype("float32")}
    y = (x["image"].mean(axis=(1, 2, 3)) > 0).astype("int64") + (x["image"][:, 0, 0, 0] > 1)
    values = {**HPARAMS, "family": "cnn", "filters": 4, "units": 16}
    model = builders.build_from_values(values, IMAGE_META)
    model.fit(builders.make_dataset(x, y, 16), epochs=3, verbose=0)
    folder = tmp_path_factory.mktemp("tflite")
    export_saved_model(model, folder / C.SAVED_MODEL_DIR, IMAGE_META)
    return folder, x, y


def test_every_variant_is_written_and_checked_against_the_saved_model(image_export):
    folder, x, y = image_export
    report = tflite.export_variants(
        folder / C.SAVED_MODEL_DIR,
        folder / C.TFLITE_DIR,
        task="classification",
        test_x=x,
        test_y=y,
        sample_x=x,
    )
    assert set(report) == {*tflite.VARIANTS, "saved_model"}
    for variant in tflite.VARIANTS:
        row = report[variant]
        path = folder / C.TFLITE_DIR / row["file"]
        assert path.stat().st_size == row["size_bytes"] > 0
        assert 0.0 <= row["agreement"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert report["float32"]["agreement"] == 1.0
    assert report["float32"]["max_abs_diff"] < 1e-4
    assert report["float16"]["max_abs_diff"] < 1e-2
    assert report["saved_model"]["accuracy"] == pytest.approx(report["float32"]["accuracy"])
    # The int8 model answers from quantized kernels: it is not the float model again.
    assert report["int8"]["max_abs_diff"] > report["float32"]["max_abs_diff"]


def test_a_table_model_with_a_category_string_input_converts_and_agrees(tmp_path):
    meta = {
        "modality": "tabular",
        "task": "classification",
        "class_names": ["no", "yes"],
        "features": [
            {"name": "n", "input": "n", "kind": "numeric"},
            {"name": "c", "input": "c", "kind": "categorical"},
        ],
        "normalization": {"n": {"mean": 0.0, "variance": 1.0}, "c": {"vocabulary": ["a", "b"]}},
    }
    model = builders.build_from_values(HPARAMS, meta)
    export_saved_model(model, tmp_path / "sm", meta)
    x = {
        "n": np.array([[0.5], [-1.0], [2.0]], dtype="float32"),
        "c": np.array([[b"a"], [b"b"], [b"zzz"]], dtype=object),
    }
    report = tflite.export_variants(
        tmp_path / "sm",
        tmp_path / "out",
        task="classification",
        test_x=x,
        test_y=np.array([0, 1, 1]),
        sample_x=x,
        variants=("float32",),
    )
    assert report["float32"]["agreement"] == 1.0
    assert report["float32"]["max_abs_diff"] < 1e-5


def test_unknown_variants_and_int8_without_a_sample_are_refused(image_export):
    folder, _, _ = image_export
    with pytest.raises(ValueError, match="unknown TFLite variant"):
        tflite.convert(folder / C.SAVED_MODEL_DIR, "int4")
    with pytest.raises(ValueError, match="representative sample"):
        tflite.convert(folder / C.SAVED_MODEL_DIR, "int8")
