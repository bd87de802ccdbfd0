"""TF Serving's REST predict JSON: request bodies to NumPy arrays, outputs back to JSON.

Requests come in the row format ({"instances": [...]}, one element per example, an object per
example when inputs are named) or the columnar format ({"inputs": ...}, whole tensors). Values
are checked against the signature's dtypes the way TF Serving checks them: numbers for numeric
inputs, strings or {"b64": ...} objects for string inputs. Answers use "predictions" for the
row format and "outputs" for the columnar one; string outputs whose name ends in "_bytes" are
base64-encoded.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import numpy as np

from kerasflow.serving import dtypes
from kerasflow.serving.errors import ServingError, invalid_argument
from kerasflow.serving.signature import TensorSpec

INSTANCES = "instances"
INPUTS = "inputs"
SIGNATURE_NAME = "signature_name"
B64 = "b64"

_FLOATS = {dtypes.DT_FLOAT, dtypes.DT_DOUBLE, dtypes.DT_HALF}


def parse_body(body: bytes) -> dict:
    """Parses a request body that must be a JSON object.

    Raises:
        ServingError: INVALID_ARGUMENT for empty, malformed or non-object bodies.
    """
    if not body or not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = json.loads(body)
    except UnicodeDecodeError:
        raise invalid_argument("JSON Parse error: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise invalid_argument(f"JSON Parse error: {exc.msg} at offset: {exc.pos}") from None
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Parse error: the request body must be a JSON object")
    return doc


def signature_name(doc: Mapping[str, Any]) -> str:
    """The optional "signature_name" of a request ("" when absent).

    Raises:
        ServingError: INVALID_ARGUMENT when it is not a string.
    """
    value = doc.get(SIGNATURE_NAME, "")
    if not isinstance(value, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return value


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64), str)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "Bool"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if value is None:
        return "Null"
    if isinstance(value, list):
        return "Array"
    return "Object"


def _type_error(value: Any, dtype: int) -> ServingError:
    text = json.dumps(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return invalid_argument(
        f"JSON Value: {text} Type: {_json_type(value)} is not of expected type: "
        f"{dtypes.short_name(dtype)}"
    )


def _leaves(value: Any):
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _decode_string(value: Any, dtype: int) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if _is_b64(value):
        try:
            return base64.b64decode(value[B64], validate=True)
        except (binascii.Error, ValueError):
            raise invalid_argument("Unable to base64 decode") from None
    raise _type_error(value, dtype)


def _shape(value: Any) -> tuple[int, ...]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return tuple(shape)


def _string_array(value: Any, dtype: int) -> np.ndarray:
    shape = _shape(value)
    flat: list[bytes] = []

    def walk(item: Any, level: int) -> None:
        if isinstance(item, list):
            if level >= len(shape) or len(item) != shape[level]:
                raise invalid_argument(_ragged_message(shape))
            for sub in item:
                walk(sub, level + 1)
        elif level != len(shape):
            raise invalid_argument(_ragged_message(shape))
        else:
            flat.append(_decode_string(item, dtype))

    walk(value, 0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _ragged_message(shape: tuple[int, ...]) -> str:
    return (
        "JSON lists are not all of the same length (a tensor must be rectangular); "
        f"expected shape {list(shape)}"
    )


def _numeric_array(value: Any, dtype: int) -> np.ndarray:
    try:
        array = np.asarray(value)
    except ValueError:
        raise invalid_argument(_ragged_message(_shape(value))) from None
    target = dtypes.NUMPY_DTYPES[dtype]
    kind = array.dtype.kind
    if array.size == 0:
        return array.astype(target)
    if dtype == dtypes.DT_BOOL:
        ok = kind == "b"
    elif dtype in _FLOATS:
        ok = kind in "fiu"
    else:
        ok = kind in "iu"
        if ok:
            info = np.iinfo(target)
            if array.min() < info.min or array.max() > info.max:
                raise invalid_argument(
                    f"JSON integer out of range for {dtypes.short_name(dtype)} "
                    f"[{info.min}, {info.max}]"
                )
    if not ok:
        if kind == "O" and _shape(value) != array.shape:
            raise invalid_argument(_ragged_message(_shape(value)))
        for leaf in _leaves(value):
            if not _leaf_fits(leaf, dtype):
                raise _type_error(leaf, dtype)
        # Every leaf has the right JSON type, so NumPy gave up on their size.
        raise invalid_argument(f"JSON number out of range for {dtypes.short_name(dtype)}")
    return array.astype(target, copy=False)


def _leaf_fits(leaf: Any, dtype: int) -> bool:
    if dtype == dtypes.DT_BOOL:
        return isinstance(leaf, bool)
    if isinstance(leaf, bool):
        return False
    if dtype in _FLOATS:
        return isinstance(leaf, int | float)
    return isinstance(leaf, int)


def to_array(value: Any, spec: TensorSpec) -> np.ndarray:
    """Converts a JSON value to an array of the spec's dtype.

    Raises:
        ServingError: INVALID_ARGUMENT for values of the wrong type or ragged lists.
    """
    if spec.dtype == dtypes.DT_STRING:
        return _string_array(value, spec.dtype)
    if spec.dtype not in dtypes.NUMPY_DTYPES:
        raise invalid_argument(
            f"input '{spec.name}' has dtype enum {spec.dtype}, which JSON cannot express"
        )
    return _numeric_array(value, spec.dtype)


def _from_instances(instances: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    if not isinstance(instances, list):
        raise invalid_argument("Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument("No values in 'instances' array")
    names = sorted(specs)
    if _is_object(instances[0]):
        for i, row in enumerate(instances):
            if not _is_object(row):
                raise invalid_argument(f"Expecting object but got list at item {i} of input list")
            if set(row) != set(names):
                raise invalid_argument(
                    f"Failed to process element: {i} of 'instances' list. JSON object has keys "
                    f"{','.join(sorted(row))} but must only have keys: {','.join(names)}"
                )
        result = {}
        for name in names:
            try:
                result[name] = to_array([row[name] for row in instances], specs[name])
            except ServingError as exc:
                raise invalid_argument(
                    f"Failed to process 'instances' key: {name}. Error: {exc.message}"
                ) from None
        return result
    if len(specs) > 1:
        raise invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    for i, row in enumerate(instances):
        if _is_object(row):
            raise invalid_argument(f"Expecting value/list but got object at item {i} of input list")
    (name,) = names
    try:
        return {name: to_array(instances, specs[name])}
    except ServingError as exc:
        raise invalid_argument(
            f"Failed to process 'instances' list. Error: {exc.message}"
        ) from None


def _from_inputs(inputs: Any, specs: Mapping[str, TensorSpec]) -> dict[str, np.ndarray]:
    names = sorted(specs)
    if not _is_object(inputs):
        if len(specs) > 1:
            raise invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        (name,) = names
        return {name: to_array(inputs, specs[name])}
    for name in names:
        if name not in inputs:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
    extra = sorted(set(inputs) - set(names))
    if extra:
        raise invalid_argument(
            f"'inputs' object has unknown input(s): {','.join(extra)}; the signature takes: "
            f"{','.join(names)}"
        )
    result = {}
    for name in names:
        try:
            result[name] = to_array(inputs[name], specs[name])
        except ServingError as exc:
            raise invalid_argument(
                f"Failed to process input: {name}. Error: {exc.message}"
            ) from None
    return result


def decode_predict(
    doc: Mapping[str, Any], specs: Mapping[str, TensorSpec]
) -> tuple[dict[str, np.ndarray], bool]:
    """Request tensors from a predict body.

    Args:
        doc: the parsed body.
        specs: the signature's inputs.

    Returns:
        (inputs by name, True when the body used the row format).

    Raises:
        ServingError: INVALID_ARGUMENT for a malformed body.
    """
    if not specs:
        raise invalid_argument("Failed to get input map for signature")
    has_rows, has_columns = INSTANCES in doc, INPUTS in doc
    if has_rows and has_columns:
        raise invalid_argument(
            "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"
        )
    if has_rows:
        return _from_instances(doc[INSTANCES], specs), True
    if has_columns:
        return _from_inputs(doc[INPUTS], specs), False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _jsonable(name: str, array: np.ndarray) -> Any:
    if array.dtype.kind not in "OSU":
        return array.tolist()
    as_b64 = name.endswith("_bytes")

    def convert(item: Any) -> Any:
        if isinstance(item, list):
            return [convert(x) for x in item]
        if isinstance(item, str):
            item = item.encode()
        if as_b64:
            return {B64: base64.b64encode(item).decode("ascii")}
        return item.decode("utf-8", errors="replace")

    return convert(array.tolist())


def encode_predict(outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """The JSON answer to a predict request.

    Raises:
        ServingError: INVALID_ARGUMENT when outputs cannot be split into rows.
    """
    if not row_format:
        if len(outputs) == 1:
            ((name, array),) = outputs.items()
            return {"outputs": _jsonable(name, array)}
        return {"outputs": {name: _jsonable(name, a) for name, a in outputs.items()}}
    sizes = {a.shape[0] if a.ndim else None for a in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid_argument(
            "Tensors in the row format must all have the same 0th dimension; use 'inputs'"
        )
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        return {"predictions": _jsonable(name, array)}
    columns = {name: _jsonable(name, a) for name, a in outputs.items()}
    rows = sizes.pop()
    return {"predictions": [{name: col[i] for name, col in columns.items()} for i in range(rows)]}
