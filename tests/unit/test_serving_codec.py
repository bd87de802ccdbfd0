"""REST JSON codec and signature checks: TF Serving's request formats and error cases."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from kerasflow.serving import dtypes, rest_codec
from kerasflow.serving.errors import Code, ServingError
from kerasflow.serving.signature import TensorSpec, check_inputs

pytestmark = pytest.mark.unit

IMAGE = {"image": TensorSpec("image", dtypes.DT_FLOAT, (None, 2, 2))}
TABLE = {
    "age": TensorSpec("age", dtypes.DT_FLOAT, (None, 1)),
    "city": TensorSpec("city", dtypes.DT_STRING, (None, 1)),
    "count": TensorSpec("count", dtypes.DT_INT64, (None,)),
}


def decode(doc, specs):
    return rest_codec.decode_predict(doc, specs)


def invalid(doc, specs, match):
    with pytest.raises(ServingError, match=match) as info:
        decode(doc, specs)
    assert info.value.code == Code.INVALID_ARGUMENT


def test_bare_rows_of_a_single_input_stack_into_a_batch():
    inputs, row_format = decode({"instances": [[[1, 2], [3, 4]], [[5, 6], [7, 8.5]]]}, IMAGE)
    assert row_format is True
    assert inputs["image"].dtype == np.float32
    np.testing.assert_array_equal(inputs["image"][1], [[5, 6], [7, 8.5]])


def test_dict_rows_give_one_tensor_per_named_input_with_strings_as_bytes():
    doc = {
        "instances": [
            {"age": [30], "city": ["rome"], "count": 3},
            {"age": [41.5], "city": [{"b64": base64.b64encode(b"\xffoslo").decode()}], "count": 4},
        ]
    }
    inputs, _ = decode(doc, TABLE)
    assert inputs["age"].shape == (2, 1)
    assert inputs["city"].dtype == object
    assert inputs["city"].tolist() == [[b"rome"], [b"\xffoslo"]]
    assert inputs["count"].dtype == np.int64
    assert inputs["count"].tolist() == [3, 4]


def test_columnar_inputs_keep_whole_tensors():
    inputs, row_format = decode({"inputs": {"age": [[1.0]], "city": [["x"]], "count": [9]}}, TABLE)
    assert row_format is False
    assert inputs["city"].tolist() == [[b"x"]]
    plain, _ = decode({"inputs": [[[0, 0], [0, 0]]]}, IMAGE)
    assert plain["image"].shape == (1, 2, 2)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({}, "Missing 'inputs' or 'instances' key"),
        ({"instances": [], "inputs": []}, "only one of 'inputs' or 'instances'"),
        ({"instances": []}, "No values in 'instances'"),
        ({"instances": {"image": 1}}, "to be an list/array"),
        ({"instances": [["a", "b"]]}, 'JSON Value: "a" Type: String is not of expected type'),
        ({"instances": [[[1, 2], [3]]]}, "not all of the same length"),
        ({"instances": [{"picture": [[1, 2], [3, 4]]}]}, "must only have keys: image"),
        ({"instances": [[[1, 2], [3, 4]], {"image": 1}]}, "got object at item 1"),
        ({"inputs": {"picture": 1}}, "Missing named input: image"),
        ({"inputs": [[[True, False], [True, True]]]}, "Type: Bool is not of expected type: float"),
    ],
)
def test_malformed_image_requests_are_invalid_arguments(doc, match):
    invalid(doc, IMAGE, match)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"instances": [[1]]}, "instances is a plain list"),
        ({"inputs": [1]}, "inputs is a plain value/list"),
        (
            {"inputs": {"age": [[1.0]], "city": [["x"]], "count": [1], "extra": 1}},
            "unknown input",
        ),
        ({"inputs": {"age": [[1.0]], "city": [[1]], "count": [1]}}, "not of expected type: string"),
        ({"inputs": {"age": [[1.0]], "city": [["x"]], "count": [1.5]}}, "expected type: int64"),
        ({"inputs": {"age": [[1]], "city": [["x"]], "count": [2**70]}}, "out of range for int64"),
        (
            {"inputs": {"age": [[1.0]], "city": [[{"b64": "%%%"}]], "count": [1]}},
            "Unable to base64 decode",
        ),
    ],
)
def test_malformed_table_requests_are_invalid_arguments(doc, match):
    invalid(doc, TABLE, match)


def test_body_must_be_a_json_object_and_signature_name_a_string():
    with pytest.raises(ServingError, match="The document is empty"):
        rest_codec.parse_body(b"  ")
    with pytest.raises(ServingError, match="JSON Parse error"):
        rest_codec.parse_body(b"instances = [1, 2]")
    with pytest.raises(ServingError, match="must be a JSON object"):
        rest_codec.parse_body(b"[1]")
    assert rest_codec.parse_body(b'{"instances": [NaN]}')["instances"][0] != 0
    with pytest.raises(ServingError, match="'signature_name' key must be a string value"):
        rest_codec.signature_name({"signature_name": 100})


def test_row_answers_list_predictions_per_row_and_columnar_answers_name_outputs():
    one = {"output_0": np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32)}
    assert rest_codec.encode_predict(one, True) == {"predictions": [[0.25, 0.75], [1.0, 0.0]]}
    assert rest_codec.encode_predict(one, False) == {"outputs": [[0.25, 0.75], [1.0, 0.0]]}
    two = {"scores": np.array([0.5, 1.5]), "label_bytes": np.array([b"\x00a", b"b"], dtype=object)}
    rows = rest_codec.encode_predict(two, True)["predictions"]
    assert rows[0] == {"scores": 0.5, "label_bytes": {"b64": base64.b64encode(b"\x00a").decode()}}
    columns = rest_codec.encode_predict(
        {"name": np.array([b"rome"], dtype=object), "p": np.array([1])}, False
    )
    assert columns == {"outputs": {"name": ["rome"], "p": [1]}}


def test_float32_outputs_round_trip_exactly_through_json():
    import json

    values = np.random.default_rng(0).random(100, dtype=np.float32)
    text = json.dumps(rest_codec.encode_predict({"y": values}, True))
    np.testing.assert_array_equal(np.array(json.loads(text)["predictions"], np.float32), values)


def test_check_inputs_names_extra_and_missing_inputs_dtype_and_shape():
    good = {"image": np.zeros((3, 2, 2), np.float32)}
    assert check_inputs(IMAGE, good).keys() == {"image"}
    with pytest.raises(ServingError, match=r"extra: \{picture\}. Missing but required: \{image\}"):
        check_inputs(IMAGE, {"picture": good["image"]})
    with pytest.raises(ServingError, match="expects float but double is provided"):
        check_inputs(IMAGE, {"image": np.zeros((3, 2, 2))})
    with pytest.raises(ServingError, match=r"expects shape \[-1,2,2\] but got \[3,4\]"):
        check_inputs(IMAGE, {"image": np.zeros((3, 4), np.float32)})
    batch_mismatch = {
        "age": np.zeros((2, 1), np.float32),
        "city": np.array([[b"a"]] * 3, dtype=object),
        "count": np.zeros(2, np.int64),
    }
    with pytest.raises(ServingError, match="equal 0th-dimension size"):
        check_inputs(TABLE, batch_mismatch)
