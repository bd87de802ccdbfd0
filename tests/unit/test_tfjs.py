"""TensorFlow.js exports: the SavedModel converted to a graph model and checked in Node.

The converter lives in a venv of its own (`bash .ci/setup-tfjs.sh`, found through
KERASFLOW_TFJS_CONVERTER); the tests that convert skip with the reason where it is absent.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from kerasflow import constants as C
from kerasflow.modeling import tfjs
from kerasflow.runtime.errors import UserError
from kerasflow.settings.steps import TrainSettings, parse_exports
from tests.unit.test_tflite import image_export  # noqa: F401 (a module-scoped fixture)

pytestmark = pytest.mark.unit


@pytest.fixture
def converter():
    """The converter's path; skips with the reason where the converter, tfjs or Node is absent."""
    reason = tfjs.missing()
    if reason:
        pytest.skip(reason)
    return tfjs.converter_path()


def test_a_missing_converter_stops_the_settings_with_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setenv(tfjs.CONVERTER_ENV, str(tmp_path / "bin" / "tensorflowjs_converter"))
    with pytest.raises(UserError, match=r"not installed .*bash \.ci/setup-tfjs\.sh") as caught:
        TrainSettings.parse({"export": "tflite,tfjs"})
    assert "\n" not in str(caught.value)
    assert parse_exports("tflite, TFLITE") == ("tflite",)  # tflite needs no converter
    # A converter without @tensorflow/tfjs beside it cannot be checked: refused as well.
    fake = tmp_path / "bin" / "tensorflowjs_converter"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    with pytest.raises(UserError, match="@tensorflow/tfjs is not installed"):
        parse_exports("tfjs")


def test_kerasflow_run_refuses_tfjs_before_any_step_without_the_converter(monkeypatch, tmp_path):
    from tests.e2e.cli import kerasflow

    monkeypatch.setenv(tfjs.CONVERTER_ENV, str(tmp_path / "none" / "tensorflowjs_converter"))
    proc = kerasflow(
        "run", "--data", "builtin:digits", "--export", "tflite,tfjs", "--work-dir", "work",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"kerasflow: error: {tfjs.missing()}",
    ]
    assert "bash .ci/setup-tfjs.sh" in proc.stderr
    assert not (tmp_path / "work").exists()


def test_unsupported_ops_are_read_from_the_converter_log():
    log = (
        '  File "tf_saved_model_conversion_v2.py", line 153, in optimize_graph\n'
        "    raise ValueError('Unsupported Ops in the model before optimization\\n' +\n"
        "ValueError: Unsupported Ops in the model before optimization\n"
        "StringLower, StringSplitV2\n"
    )
    assert tfjs.unsupported_ops(log) == ["StringLower", "StringSplitV2"]
    assert tfjs.unsupported_ops("Traceback...\nOSError: no such file\n") == []


def test_a_cnn_converts_to_a_graph_model_that_agrees_in_node(image_export, converter):  # noqa: F811
    folder, x, y = image_export
    out = folder / C.TFJS_DIR
    report = tfjs.export_graph_model(
        folder / C.SAVED_MODEL_DIR, out, task="classification", test_x=x, test_y=y
    )
    row = report["graph_model"]
    topology = json.loads((out / tfjs.MODEL_FILE).read_text())
    assert topology["format"] == "graph-model"
    assert set(topology["signature"]["inputs"]) == {C.IMAGE_INPUT}
    assert set(topology["signature"]["outputs"]) == {C.SERVING_OUTPUT}
    files = [tfjs.MODEL_FILE, *row["weight_shards"]]
    assert row["weight_shards"]
    assert sum((out / f).stat().st_size for f in files) == row["size_bytes"]
    assert row["agreement"] == 1.0 and row["max_abs_diff"] < 1e-4
    assert row["accuracy"] == pytest.approx(report["saved_model"]["accuracy"])
    # The answers come from the converted model itself: they are not the SavedModel's copied.
    answers = tfjs.run_tfjs(out, {C.IMAGE_INPUT: x[C.IMAGE_INPUT][:5]})
    assert answers.shape == (5, 3)
    np.testing.assert_allclose(answers.sum(axis=1), 1.0, atol=1e-5)
    zeros = tfjs.run_tfjs(out, {C.IMAGE_INPUT: np.zeros((1, 8, 8, 1), "float32")})
    assert not np.allclose(zeros, answers[:1])


def test_a_model_with_ops_tfjs_lacks_is_refused_naming_them(tmp_path, converter):
    import keras

    text = keras.Input((1,), dtype="string", name="text")
    vectorize = keras.layers.TextVectorization(output_sequence_length=4, vocabulary=["a", "b"])
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(8, 2)(vectorize(text)))
    model = keras.Model(text, keras.layers.Dense(2, activation="softmax")(pooled))
    model.export(str(tmp_path / "sm"), verbose=False)
    with pytest.raises(UserError, match="TensorFlow.js cannot run operations of this model: Str"):
        tfjs.convert(tmp_path / "sm", tmp_path / "out")


def test_a_text_model_is_refused_before_its_fit_and_other_modalities_pass(converter):
    from kerasflow.components.train.exports import check_exports

    with pytest.raises(UserError, match=r"string operations \(TextVectorization\)"):
        check_exports("tflite,tfjs", {C.META_MODALITY: "text"})
    for modality in ("image", "tabular"):
        check_exports("tfjs", {C.META_MODALITY: modality})
    check_exports("tflite", {C.META_MODALITY: "text"})  # TFLite has no such limit here


def test_a_converter_that_hangs_is_given_up_with_one_line(monkeypatch, tmp_path):
    hanging = tmp_path / "tensorflowjs_converter"
    hanging.write_text("#!/bin/sh\nsleep 30\n")
    hanging.chmod(0o755)
    monkeypatch.setattr(tfjs, "TOOL_TIMEOUT_S", 0.5)
    with pytest.raises(UserError, match=r"did not finish within 0\.5 s"):
        tfjs._run_tool([str(hanging)], {}, "the TensorFlow.js converter")
