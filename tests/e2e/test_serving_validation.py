"""Infra validation and warmup files, as the deploy step uses them."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from kerasflow.runtime.errors import UserError
from kerasflow.serving import InfraValidationError, validate_export, write_warmup_requests
from kerasflow.serving.warmup import read_warmup_requests
from tests.serving_fixtures import digits_batch, publish_corrupt, table_batch

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def test_validate_export_returns_the_models_answer(serving_exports, reference):
    images = digits_batch(4, seed=11)
    got = validate_export(serving_exports.digits_v1, {"image": images})
    np.testing.assert_allclose(
        got, reference(serving_exports.digits_v1, {"image": images}), rtol=1e-6, atol=1e-7
    )
    batch = table_batch(3)
    # Plain str arrays are accepted and fed as bytes.
    cities = np.array([[c.decode() for c in row] for row in batch["city"]])
    strings = {"age": batch["age"], "city": cities}
    np.testing.assert_allclose(
        validate_export(serving_exports.table, strings),
        reference(serving_exports.table, batch),
        rtol=1e-6,
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        ({"pixels": digits_batch(1)}, "does not answer: input size does not match signature"),
        ({"image": np.zeros((1, 4), np.float32)}, "expects shape"),
        ({"image": digits_batch(1).astype(np.float64)}, "expects float but double"),
    ],
)
def test_inputs_that_do_not_fit_fail_validation(serving_exports, inputs, match):
    with pytest.raises(InfraValidationError, match=match):
        validate_export(serving_exports.digits_v1, inputs)


def test_exports_that_do_not_load_fail_validation(tmp_path):
    corrupt = publish_corrupt(tmp_path, 1)
    with pytest.raises(InfraValidationError, match="does not load: Can't parse"):
        validate_export(corrupt, {"image": digits_batch(1)})
    (tmp_path / "empty").mkdir()
    with pytest.raises(InfraValidationError, match="does not load: SavedModel file does not"):
        validate_export(tmp_path / "empty", {"image": digits_batch(1)})
    with pytest.raises(InfraValidationError, match="not found"):
        validate_export(tmp_path / "missing", {"image": digits_batch(1)})


def test_warmup_file_is_a_tfrecord_of_predict_logs_tf_serving_reads(serving_exports, tmp_path):
    export = tmp_path / "1"
    shutil.copytree(serving_exports.table, export)
    batch = table_batch(2)
    path = write_warmup_requests(export, "houses", batch, n=3)
    records = [
        prediction_log_pb2.PredictionLog.FromString(r)
        for r in tf.data.TFRecordDataset(str(path)).as_numpy_iterator()
    ]
    assert len(records) == 3
    request = records[0].predict_log.request
    assert request.model_spec.name == "houses"
    assert request.model_spec.signature_name == "serving_default"
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["age"]), batch["age"])
    assert tf.make_ndarray(request.inputs["city"]).tolist() == batch["city"].tolist()
    assert len(read_warmup_requests(export)) == 3
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    # The export still validates with its warmup replayed at load.
    assert validate_export(export, batch).shape == (2, 1)


def test_warmup_inputs_must_match_the_signature(serving_exports, tmp_path):
    with pytest.raises(UserError, match="do not match the signature's inputs"):
        write_warmup_requests(serving_exports.digits_v1, "d", {"pixels": digits_batch(1)})
    with pytest.raises(UserError, match="SavedModel file does not exist"):
        write_warmup_requests(tmp_path, "d", {"image": digits_batch(1)})
