"""A small TF Serving client for `kerasflow predict`, over REST or gRPC.

Rows are read from JSON or CSV and shaped with the model's own metadata (input dtypes and
shapes), so a CSV of table columns or a JSON list of flat pixel rows becomes exactly the tensors
the signature takes, for this server and the official one alike. The REST path does not import
TensorFlow, which keeps it quick to start.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow.runtime.errors import UserError
from kerasflow.serving import dtypes
from kerasflow.serving.signature import DEFAULT_SIGNATURE, TensorSpec


def read_rows(path: str) -> list:
    """Rows from a JSON file (a list of objects or of lists) or a CSV file with a header.

    Raises:
        UserError: when the file is missing, empty or not in one of those shapes.
    """
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise UserError(f"cannot read --input {path}: {exc.strerror}") from None
    if file.suffix.lower() == ".csv":
        rows: list = list(csv.DictReader(text.splitlines()))
    else:
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"--input {path} is not valid JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        if isinstance(rows, dict) and "instances" in rows:
            rows = rows["instances"]
    if not isinstance(rows, list) or not rows:
        raise UserError(f"--input {path} holds no rows (want a JSON list or a CSV with a header)")
    kinds = {isinstance(r, dict) for r in rows}
    if len(kinds) != 1:
        raise UserError(f"--input {path} mixes objects and lists; use one kind of row")
    return rows


def _convert_cell(value: Any, spec: TensorSpec) -> Any:
    # CSV cells are text; JSON values already have their types.
    if not isinstance(value, str) or spec.dtype == dtypes.DT_STRING:
        return value
    text = value.strip()
    try:
        if spec.dtype == dtypes.DT_BOOL:
            return text.lower() in ("1", "true", "yes")
        if spec.numpy_dtype.kind in "iu":
            return int(text)
        return float(text) if text else math.nan
    except ValueError:
        raise UserError(
            f"input {spec.name!r} takes {dtypes.short_name(spec.dtype)} values, got {value!r}"
        ) from None


def _shape_column(values: list, spec: TensorSpec) -> np.ndarray:
    target = object if spec.dtype == dtypes.DT_STRING else spec.numpy_dtype
    try:
        array = np.array(values, dtype=target)
    except (ValueError, TypeError):
        raise UserError(
            f"values of input {spec.name!r} are not all {dtypes.short_name(spec.dtype)} "
            "values of one shape"
        ) from None
    tail = spec.shape[1:] if spec.shape else None
    if tail is not None and None not in tail and array.shape[1:] != tail:
        size = math.prod(tail)
        if array.size == len(values) * size:
            array = array.reshape((len(values), *tail))
    return array


def build_inputs(rows: Sequence, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    """Tensors for a signature from rows, each row an object of inputs or one input's values.

    Raises:
        UserError: when rows do not name the signature's inputs or hold values of another type.
    """
    names = sorted(specs)
    if isinstance(rows[0], dict):
        for i, row in enumerate(rows):
            if set(row) != set(names):
                raise UserError(
                    f"row {i} has columns {sorted(row)}, the model takes inputs {names}"
                )
        return {
            name: _shape_column([_convert_cell(r[name], specs[name]) for r in rows], specs[name])
            for name in names
        }
    if len(names) != 1:
        raise UserError(
            f"rows are lists but the model takes several inputs ({', '.join(names)}); "
            "give a list of objects or a CSV with those columns"
        )
    (name,) = names
    return {name: _shape_column([_convert_rows(r, specs[name]) for r in rows], specs[name])}


def _convert_rows(row: Any, spec: TensorSpec) -> Any:
    if isinstance(row, list):
        return [_convert_rows(v, spec) for v in row]
    return _convert_cell(row, spec)


def predictions_from_outputs(outputs: Mapping[str, np.ndarray]) -> list:
    """Per-row predictions as the REST row format gives them (a list of objects if several)."""
    columns = {k: _plain(v) for k, v in outputs.items()}
    if len(columns) == 1:
        return next(iter(columns.values()))
    rows = len(next(iter(columns.values())))
    return [{k: col[i] for k, col in columns.items()} for i in range(rows)]


def _plain(array: np.ndarray) -> Any:
    values = np.asarray(array).tolist()

    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        return v.decode("utf-8", errors="replace") if isinstance(v, bytes) else v

    return fix(values)


class RestClient:
    """Talks to a TF Serving REST API at `url` (http://host:port)."""

    def __init__(self, url: str, timeout: float = 60.0):
        import requests

        self._url = url.rstrip("/")
        self._session = requests.Session()
        self._timeout = timeout

    def _model_path(self, model: str, version: int | None, label: str | None = None) -> str:
        path = f"{self._url}/v1/models/{model}"
        if label is not None:
            return f"{path}/labels/{label}"
        return f"{path}/versions/{version}" if version is not None else path

    def _call(self, method: str, url: str, **kwargs) -> Any:
        import requests

        try:
            response = self._session.request(method, url, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            raise UserError(f"cannot reach the REST API at {self._url}: {exc}") from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"error": response.text.strip()[:200]}
        if response.status_code != 200:
            raise UserError(
                f"the server refused the request ({response.status_code}): "
                f"{payload.get('error', payload)}"
            )
        return payload

    def input_specs(self, model: str, version: int | None, signature: str) -> dict[str, TensorSpec]:
        """The signature's inputs, read from the metadata endpoint."""
        meta = self._call("GET", self._model_path(model, version) + "/metadata")
        defs = meta.get("metadata", {}).get("signature_def", {}).get("signature_def", {})
        if signature not in defs:
            raise UserError(f"model {model!r} has no signature {signature!r}")
        specs = {}
        for name, info in defs[signature].get("inputs", {}).items():
            shape_info = info.get("tensor_shape", {})
            shape = None
            if not shape_info.get("unknown_rank"):
                sizes = [int(d.get("size", -1)) for d in shape_info.get("dim", [])]
                shape = tuple(None if s < 0 else s for s in sizes)
            specs[name] = TensorSpec(name, dtypes.DT_BY_NAME.get(info.get("dtype"), 0), shape)
        return specs

    def predict_outputs(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = DEFAULT_SIGNATURE,
    ) -> dict[str, np.ndarray]:
        """Sends a columnar predict request; returns the outputs as arrays (a lone unnamed
        output under the key `outputs`)."""
        outputs = self._predict_columns(model, version, label, signature, inputs)
        if isinstance(outputs, dict):
            return {k: np.asarray(v) for k, v in outputs.items()}
        return {"outputs": np.asarray(outputs)}

    def _predict_columns(self, model, version, label, signature, inputs) -> Any:
        body = {
            "signature_name": signature,
            "inputs": {k: _plain(v) for k, v in inputs.items()},
        }
        path = self._model_path(model, version, label) + ":predict"
        return self._call("POST", path, json=body).get("outputs")

    def label_version(self, model: str, label: str) -> int | None:
        """The version a label names on the server now (None: the server has no such label)."""
        try:
            status = self._call("GET", self._model_path(model, None, label))
        except UserError:
            return None
        versions = status.get("model_version_status") or [{}]
        return int(versions[0].get("version", 0)) or None

    def version_state(self, model: str, version: int) -> str | None:
        """The state of a version on the server (AVAILABLE...; None when it is unknown)."""
        try:
            status = self._call("GET", self._model_path(model, version))
        except UserError:
            return None
        versions = status.get("model_version_status") or [{}]
        return versions[0].get("state")

    def predict(
        self, model: str, version: int | None, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> list:
        """Sends a columnar predict request; returns per-row predictions."""
        outputs = self._predict_columns(model, version, None, signature, inputs)
        if isinstance(outputs, dict):
            rows = len(next(iter(outputs.values())))
            return [{k: col[i] for k, col in outputs.items()} for i in range(rows)]
        return outputs


class GrpcClient:
    """Talks to a TF Serving gRPC API at `target` (host:port)."""

    def __init__(self, target: str, timeout: float = 60.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._target = target
        self._channel = grpc.insecure_channel(target)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._timeout = timeout

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise UserError(
                    f"cannot reach the gRPC API at {self._target}: {exc.details()}"
                ) from None
            raise UserError(
                f"the server refused the request ({exc.code().name}): {exc.details()}"
            ) from None

    @staticmethod
    def _spec(
        request, model: str, version: int | None, signature: str, label: str | None = None
    ) -> None:
        request.model_spec.name = model
        request.model_spec.signature_name = signature
        if label is not None:
            request.model_spec.version_label = label
        elif version is not None:
            request.model_spec.version.value = version

    def _status(self, model: str, version: int | None, label: str | None):
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request, model, version, "", label)
        request.model_spec.ClearField("signature_name")
        stub = model_service_pb2_grpc.ModelServiceStub(self._channel)
        try:
            response = self._call(stub.GetModelStatus, request)
        except UserError:
            return None
        return response.model_version_status[0] if response.model_version_status else None

    def label_version(self, model: str, label: str) -> int | None:
        """The version a label names on the server now (None: the server has no such label)."""
        status = self._status(model, None, label)
        return int(status.version) if status is not None else None

    def version_state(self, model: str, version: int) -> str | None:
        """The state of a version on the server (AVAILABLE...; None when it is unknown)."""
        from tensorflow_serving.apis import get_model_status_pb2

        status = self._status(model, version, None)
        if status is None:
            return None
        return get_model_status_pb2.ModelVersionStatus.State.Name(status.state)

    def input_specs(self, model: str, version: int | None, signature: str) -> dict[str, TensorSpec]:
        """The signature's inputs, read with GetModelMetadata."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request, model, version, "")
        response = self._call(self._stub.GetModelMetadata, request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        if signature not in defs.signature_def:
            raise UserError(f"model {model!r} has no signature {signature!r}")
        return {
            name: TensorSpec.from_tensor_info(name, info)
            for name, info in defs.signature_def[signature].inputs.items()
        }

    def predict(
        self, model: str, version: int | None, signature: str, inputs: Mapping[str, np.ndarray]
    ) -> list:
        """Sends a Predict call; returns per-row predictions."""
        outputs = self.predict_outputs(model, inputs, version=version, signature=signature)
        return predictions_from_outputs(outputs)

    def predict_outputs(
        self,
        model: str,
        inputs: Mapping[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = DEFAULT_SIGNATURE,
    ) -> dict[str, np.ndarray]:
        """Sends a Predict call; returns the outputs as arrays."""
        from tensorflow_serving.apis import predict_pb2

        from kerasflow.serving.tensors import from_ndarray, to_ndarray

        request = predict_pb2.PredictRequest()
        self._spec(request, model, version, signature, label)
        for name, array in inputs.items():
            from_ndarray(array, out=request.inputs[name])
        response = self._call(self._stub.Predict, request)
        return {k: to_ndarray(v) for k, v in response.outputs.items()}


def predict_rows(
    client: RestClient | GrpcClient,
    model: str,
    rows: Sequence,
    version: int | None = None,
    signature: str = DEFAULT_SIGNATURE,
) -> list:
    """Shapes `rows` with the model's metadata, sends one predict request, returns predictions.

    Raises:
        UserError: for unreachable servers, refused requests and rows that do not fit.
    """
    specs = client.input_specs(model, version, signature)
    inputs = build_inputs(rows, specs)
    return client.predict(model, version, signature, inputs)
