"""gRPC conformance with tensorflow-serving-api's own stubs, as a TF Serving client calls them."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    predict_pb2,
    regression_pb2,
)

from tests.serving_fixtures import MAX_REQUEST_BYTES, digits_batch, pair_batch, table_batch

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def predict_request(model: str, inputs: dict, version=None, label=None, signature=None):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    if version is not None:
        request.model_spec.version.value = version
    if label is not None:
        request.model_spec.version_label = label
    if signature is not None:
        request.model_spec.signature_name = signature
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request


def rpc_error(call, request, code: grpc.StatusCode, contains: str):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    assert info.value.code() == code, info.value.details()
    assert contains in info.value.details()


def test_predict_answers_like_the_model_and_echoes_the_model_spec(
    conformance, grpc_stubs, reference
):
    predict, _ = grpc_stubs
    images = digits_batch(3, seed=5)
    response = predict.Predict(predict_request("digits", {"image": images}), timeout=30)
    assert response.model_spec.name == "digits"
    assert response.model_spec.version.value == 2
    assert response.model_spec.signature_name == "serving_default"
    assert list(response.outputs) == ["output_0"]
    got = tf.make_ndarray(response.outputs["output_0"])
    np.testing.assert_allclose(
        got, reference(conformance.exports.digits_v2, {"image": images}), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize(
    ("selector", "export", "version"),
    [
        ({"version": 1}, "digits_v1", 1),
        ({"label": "stable"}, "digits_v1", 1),
        ({"label": "canary"}, "digits_v2", 2),
    ],
)
def test_predict_by_version_and_label(
    conformance, grpc_stubs, reference, selector, export, version
):
    predict, _ = grpc_stubs
    images = digits_batch(2, seed=6)
    response = predict.Predict(predict_request("digits", {"image": images}, **selector), timeout=30)
    assert response.model_spec.version.value == version
    expected = reference(getattr(conformance.exports, export), {"image": images})
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["output_0"]), expected, rtol=1e-6, atol=1e-7
    )


def test_predict_with_string_and_dict_inputs(conformance, grpc_stubs, reference):
    predict, _ = grpc_stubs
    for model, batch, export in [
        ("table", table_batch(5, seed=7), conformance.exports.table),
        ("pair", pair_batch(4, seed=8), conformance.exports.pair),
    ]:
        response = predict.Predict(predict_request(model, batch), timeout=30)
        np.testing.assert_allclose(
            tf.make_ndarray(response.outputs["output_0"]),
            reference(export, batch),
            rtol=1e-6,
            atol=1e-6,
        )


def test_output_filter_selects_outputs(grpc_stubs):
    predict, _ = grpc_stubs
    request = predict_request("digits", {"image": digits_batch(1)})
    request.output_filter.append("output_0")
    assert list(predict.Predict(request, timeout=30).outputs) == ["output_0"]
    request.output_filter[0] = "logits"
    rpc_error(
        predict.Predict,
        request,
        grpc.StatusCode.INVALID_ARGUMENT,
        "output tensor alias not found in signature: logits",
    )


def test_model_status_by_model_version_and_label(grpc_stubs):
    _, models = grpc_stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "digits"
    response = models.GetModelStatus(request, timeout=30)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
    ]
    assert response.model_version_status[0].status.error_code == 0
    request.model_spec.version_label = "stable"
    assert [s.version for s in models.GetModelStatus(request).model_version_status] == [1]
    request.model_spec.version.value = 3
    rpc_error(
        models.GetModelStatus,
        request,
        grpc.StatusCode.NOT_FOUND,
        "Could not find version 3 of model digits",
    )
    request.model_spec.name = "nope"
    request.model_spec.ClearField("version")
    rpc_error(
        models.GetModelStatus,
        request,
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )
    request.model_spec.name = "digits"
    request.model_spec.version_label = "gold"
    rpc_error(
        models.GetModelStatus,
        request,
        grpc.StatusCode.NOT_FOUND,
        "Unrecognized servable version label: gold",
    )


def test_metadata_carries_the_signature_def_map(grpc_stubs):
    predict, _ = grpc_stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "table"
    response = predict.GetModelMetadata(request, timeout=30)
    assert response.model_spec.name == "table" and response.model_spec.version.value == 1
    defs = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(defs)
    inputs = defs.signature_def["serving_default"].inputs
    assert (inputs["age"].dtype, inputs["city"].dtype) == (
        tf.float32.as_datatype_enum,
        tf.string.as_datatype_enum,
    )
    rpc_error(
        predict.GetModelMetadata,
        get_model_metadata_pb2.GetModelMetadataRequest(model_spec=request.model_spec),
        grpc.StatusCode.INVALID_ARGUMENT,
        "must specify at least one metadata_field",
    )
    request.metadata_field[0] = "graph"
    rpc_error(
        predict.GetModelMetadata,
        request,
        grpc.StatusCode.INVALID_ARGUMENT,
        "Metadata field graph is not supported",
    )


@pytest.mark.parametrize(
    ("kwargs", "code", "contains"),
    [
        (
            {"model": "nope"},
            grpc.StatusCode.NOT_FOUND,
            "Servable not found for request: Latest(nope)",
        ),
        ({"version": 5}, grpc.StatusCode.NOT_FOUND, "Specific(digits, 5)"),
        ({"label": "gold"}, grpc.StatusCode.NOT_FOUND, "Unrecognized servable version label"),
        (
            {"signature": "nope"},
            grpc.StatusCode.FAILED_PRECONDITION,
            'Serving signature key "nope" not found.',
        ),
        (
            {"inputs": {"pixels": digits_batch(1)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "Sent extra: {pixels}. Missing but required: {image}",
        ),
        (
            {"inputs": {"image": digits_batch(1).astype(np.float64)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects float but double is provided",
        ),
        (
            {"inputs": {"image": np.zeros((1, 4, 4, 1), np.float32)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects shape [-1,8,8,1] but got [1,4,4,1]",
        ),
        (
            {"inputs": {"image": np.array([[b"x"]], dtype=object)}},
            grpc.StatusCode.INVALID_ARGUMENT,
            "expects float but string is provided",
        ),
        ({"model": ""}, grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name"),
    ],
)
def test_predict_errors(grpc_stubs, kwargs, code, contains):
    predict, _ = grpc_stubs
    model = kwargs.pop("model", "digits")
    inputs = kwargs.pop("inputs", {"image": digits_batch(1)})
    rpc_error(predict.Predict, predict_request(model, inputs, **kwargs), code, contains)


def test_a_message_over_the_limit_is_resource_exhausted_and_the_server_keeps_serving(grpc_stubs):
    predict, _ = grpc_stubs
    big = digits_batch(MAX_REQUEST_BYTES // 256 + 10)
    rpc_error(
        predict.Predict,
        predict_request("digits", {"image": big}),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    )
    assert predict.Predict(predict_request("digits", {"image": digits_batch(1)}), timeout=30)


def test_classify_regress_and_multi_inference_are_refused_like_tf_serving(grpc_stubs):
    predict, _ = grpc_stubs
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "digits"
    rpc_error(
        predict.Classify,
        classify,
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected classification signature method_name to be tensorflow/serving/classify. "
        "Was: tensorflow/serving/predict",
    )
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "digits"
    rpc_error(
        predict.Regress,
        regress,
        grpc.StatusCode.INVALID_ARGUMENT,
        "Expected regression signature method_name",
    )
    regress.model_spec.name = "nope"
    rpc_error(predict.Regress, regress, grpc.StatusCode.NOT_FOUND, "Servable not found")
    rpc_error(
        predict.MultiInference,
        inference_pb2.MultiInferenceRequest(),
        grpc.StatusCode.UNIMPLEMENTED,
        "MultiInference",
    )


def test_a_second_signature_answers_string_tensors(conformance, grpc_stubs, reference):
    from tests.serving_fixtures import DIGIT_NAMES

    predict, _ = grpc_stubs
    images = digits_batch(4, seed=15)
    request = predict_request("labelled", {"image": images}, signature="classify")
    response = predict.Predict(request, timeout=30)
    assert response.model_spec.signature_name == "classify"
    scores = reference(conformance.exports.labelled, {"image": images})
    assert tf.make_ndarray(response.outputs["classes"]).tolist() == [
        DIGIT_NAMES[i].encode() for i in scores.argmax(axis=1)
    ]
    np.testing.assert_allclose(
        tf.make_ndarray(response.outputs["scores"]), scores, rtol=1e-6, atol=1e-7
    )
