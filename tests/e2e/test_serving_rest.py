"""REST conformance: plain HTTP requests exactly as a TF Serving REST client sends them."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from tests.serving_fixtures import MAX_REQUEST_BYTES, digits_batch, pair_batch, table_batch

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def http():
    with requests.Session() as session:
        yield session


def url(conformance, path: str) -> str:
    return conformance.rest + path


def ok(response: requests.Response) -> dict:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def error(response: requests.Response, status: int, contains: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert contains in body["error"]
    return body["error"]


def test_model_status_lists_every_version_newest_first(conformance, http):
    body = ok(http.get(url(conformance, "/v1/models/digits")))
    assert body == {
        "model_version_status": [
            {
                "version": v,
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in ("2", "1")
        ]
    }


@pytest.mark.parametrize(
    ("path", "version"),
    [("/v1/models/digits/versions/1", "1"), ("/v1/models/digits/labels/canary", "2")],
)
def test_status_of_one_version_by_number_or_label(conformance, http, path, version):
    body = ok(http.get(url(conformance, path)))
    assert [s["version"] for s in body["model_version_status"]] == [version]


def test_metadata_is_the_signature_def_map(conformance, http):
    body = ok(http.get(url(conformance, "/v1/models/digits/versions/1/metadata")))
    assert body["model_spec"] == {"name": "digits", "signature_name": "", "version": "1"}
    signature = body["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    image = signature["inputs"]["image"]
    assert image["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in image["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    output = signature["outputs"]["output_0"]
    assert [d["size"] for d in output["tensor_shape"]["dim"]] == ["-1", "10"]
    latest = ok(http.get(url(conformance, "/v1/models/digits/metadata")))
    assert latest["model_spec"]["version"] == "2"


def test_predict_row_format_with_bare_rows(conformance, http, reference):
    images = digits_batch(3, seed=1)
    body = ok(
        http.post(
            url(conformance, "/v1/models/digits:predict"), json={"instances": images.tolist()}
        )
    )
    expected = reference(conformance.exports.digits_v2, {"image": images})
    np.testing.assert_allclose(np.array(body["predictions"]), expected, rtol=1e-6, atol=1e-7)


def test_predict_row_format_with_an_object_per_row_and_string_inputs(conformance, http, reference):
    batch = table_batch(4, seed=2)
    instances = [
        {"age": batch["age"][i].tolist(), "city": [batch["city"][i][0].decode()]} for i in range(4)
    ]
    instances[1]["city"] = [{"b64": base64.b64encode(batch["city"][1][0]).decode()}]
    body = ok(
        http.post(url(conformance, "/v1/models/table:predict"), json={"instances": instances})
    )
    expected = reference(conformance.exports.table, batch)
    np.testing.assert_allclose(np.array(body["predictions"]), expected, rtol=1e-6, atol=1e-6)


def test_predict_columnar_format_with_named_inputs(conformance, http, reference):
    batch = pair_batch(5, seed=3)
    body = ok(
        http.post(
            url(conformance, "/v1/models/pair:predict"),
            json={
                "signature_name": "serving_default",
                "inputs": {k: v.tolist() for k, v in batch.items()},
            },
        )
    )
    assert set(body) == {"outputs"}
    expected = reference(conformance.exports.pair, batch)
    np.testing.assert_allclose(np.array(body["outputs"]), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("path", "export"),
    [
        ("/v1/models/digits/versions/1:predict", "digits_v1"),
        ("/v1/models/digits/labels/stable:predict", "digits_v1"),
        ("/v1/models/digits/labels/canary:predict", "digits_v2"),
    ],
)
def test_predict_by_version_and_label(conformance, http, reference, path, export):
    images = digits_batch(2, seed=4)
    body = ok(http.post(url(conformance, path), json={"inputs": images.tolist()}))
    expected = reference(getattr(conformance.exports, export), {"image": images})
    np.testing.assert_allclose(np.array(body["outputs"]), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("method", "path", "status", "contains"),
    [
        ("GET", "/v1/models/nope", 404, "Could not find any versions of model nope"),
        ("GET", "/v1/models/digits/versions/9", 404, "Could not find version 9 of model digits"),
        ("GET", "/v1/models/digits/labels/gold", 404, "Unrecognized servable version label: gold"),
        ("GET", "/v1/models/nope/metadata", 404, "Servable not found for request: Latest(nope)"),
        ("GET", "/v1/models", 400, "Missing model name in request."),
        ("GET", "/v1/models/digits/version/1", 400, "Malformed request: GET"),
        ("GET", "/v1/models/digits:predict", 400, "Malformed request: GET"),
        ("GET", "/v2/models/digits", 404, "Not found"),
    ],
)
def test_get_errors(conformance, http, method, path, status, contains):
    error(http.request(method, url(conformance, path)), status, contains)


@pytest.mark.parametrize(
    ("path", "payload", "status", "contains"),
    [
        ("/v1/models/nope:predict", {"instances": [1]}, 404, "Servable not found for request"),
        ("/v1/models/digits/versions/7:predict", {"instances": [1]}, 404, "Specific(digits, 7)"),
        ("/v1/models/digits/labels/gold:predict", {"instances": [1]}, 404, "Unrecognized"),
        ("/v1/models/digits:predict", {"instances": [[["x"]]]}, 400, "not of expected type"),
        (
            "/v1/models/digits:predict",
            {"instances": [[1.0, 2.0]]},
            400,
            "expects shape [-1,8,8,1] but got [1,2]",
        ),
        (
            "/v1/models/digits:predict",
            {"instances": [{"pixels": 1}]},
            400,
            "must only have keys: image",
        ),
        (
            "/v1/models/pair:predict",
            {"inputs": {"x1": [[1.0]], "x3": [[1.0, 2.0]]}},
            400,
            "Missing named input: x2",
        ),
        ("/v1/models/pair:predict", {"instances": [[1.0]]}, 400, "instances is a plain list"),
        (
            "/v1/models/table:predict",
            {"inputs": {"age": [["old"]], "city": [["rome"]]}},
            400,
            "is not of expected type: float",
        ),
        (
            "/v1/models/digits:predict",
            {"signature_name": "nope", "instances": [1]},
            400,
            'Serving signature name: "nope" not found in signature def',
        ),
        (
            "/v1/models/digits:predict",
            {"signature_name": 1, "instances": [1]},
            400,
            "'signature_name' key must be a string value.",
        ),
        ("/v1/models/digits:predict", {"instances": [1], "inputs": [1]}, 400, "only one of"),
        ("/v1/models/digits:predict", {"examples": []}, 400, "Missing 'inputs' or 'instances'"),
        (
            "/v1/models/digits:classify",
            {"examples": [{"x": 1.0}]},
            400,
            "Expected classification signature method_name to be tensorflow/serving/classify",
        ),
        (
            "/v1/models/digits:regress",
            {"examples": [{"x": 1.0}]},
            400,
            "Expected regression signature method_name to be tensorflow/serving/regress",
        ),
        ("/v1/models/digits:explain", {"instances": [1]}, 400, "Malformed request: POST"),
    ],
)
def test_predict_errors(conformance, http, path, payload, status, contains):
    error(http.post(url(conformance, path), json=payload), status, contains)


def test_bad_json_and_empty_bodies_are_400(conformance, http):
    target = url(conformance, "/v1/models/digits:predict")
    error(http.post(target, data=b"instances = [1]"), 400, "JSON Parse error")
    error(http.post(target, data=b""), 400, "JSON Parse error: The document is empty")
    error(http.post(target, data=b"[1, 2]"), 400, "must be a JSON object")


def test_a_body_over_the_limit_is_413_and_the_server_keeps_serving(conformance, http):
    too_big = json.dumps({"instances": [[0.5] * 64] * 1000}).encode()
    assert len(too_big) > MAX_REQUEST_BYTES
    target = url(conformance, "/v1/models/digits:predict")
    error(requests.post(target, data=too_big), 413, "exceeds the limit")
    chunks = (too_big[i : i + 4096] for i in range(0, len(too_big), 4096))
    error(requests.post(target, data=chunks), 413, "exceeds the limit")
    ok(http.post(target, json={"instances": digits_batch(1).tolist()}))


def test_keep_alive_connection_survives_errors(conformance, http):
    target = url(conformance, "/v1/models/digits:predict")
    for _ in range(3):
        error(http.post(target, data=b"{"), 400, "JSON Parse error")
        ok(http.post(target, json={"instances": digits_batch(1).tolist()}))
    ok(http.get(url(conformance, "/v1/models/digits")))


def test_a_second_signature_with_several_and_string_outputs(conformance, http, reference):
    from tests.serving_fixtures import DIGIT_NAMES

    images = digits_batch(3, seed=14)
    scores = reference(conformance.exports.labelled, {"image": images})
    classes = [DIGIT_NAMES[i] for i in scores.argmax(axis=1)]
    target = url(conformance, "/v1/models/labelled:predict")
    rows = ok(http.post(target, json={"signature_name": "classify", "instances": images.tolist()}))[
        "predictions"
    ]
    assert [row["classes"] for row in rows] == classes
    np.testing.assert_allclose([row["scores"] for row in rows], scores, rtol=1e-6, atol=1e-7)
    columns = ok(
        http.post(target, json={"signature_name": "classify", "inputs": {"image": images.tolist()}})
    )["outputs"]
    assert set(columns) == {"scores", "classes"} and columns["classes"] == classes
    meta = ok(http.get(url(conformance, "/v1/models/labelled/metadata")))
    outputs = meta["metadata"]["signature_def"]["signature_def"]["classify"]["outputs"]
    assert outputs["classes"]["dtype"] == "DT_STRING"
