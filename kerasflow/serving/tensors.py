"""TensorProto <-> NumPy conversion for the gRPC API.

Equivalent to tf.make_ndarray / tf.make_tensor_proto for the dtypes models take, but reads and
writes `tensor_content` directly with NumPy, which costs microseconds instead of tens of them.
Dtypes without a fast path fall back to TensorFlow's own functions.
"""

from __future__ import annotations

import math

import numpy as np
from tensorflow.core.framework import tensor_pb2

from kerasflow.serving import dtypes
from kerasflow.serving.errors import invalid_argument

# The repeated field holding each dtype's values when tensor_content is empty.
_VALUE_FIELDS = {
    dtypes.DT_FLOAT: "float_val",
    dtypes.DT_DOUBLE: "double_val",
    dtypes.DT_INT32: "int_val",
    dtypes.DT_UINT8: "int_val",
    dtypes.DT_INT16: "int_val",
    dtypes.DT_INT8: "int_val",
    dtypes.DT_UINT16: "int_val",
    dtypes.DT_INT64: "int64_val",
    dtypes.DT_BOOL: "bool_val",
    dtypes.DT_UINT32: "uint32_val",
    dtypes.DT_UINT64: "uint64_val",
}


def _shape_of(proto: tensor_pb2.TensorProto) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise invalid_argument("tensor has unknown rank")
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if any(d < 0 for d in shape):
        raise invalid_argument(f"tensor shape {list(shape)} has a negative dimension")
    return shape


def to_ndarray(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Converts a TensorProto to a NumPy array (strings become an object array of bytes).

    Raises:
        ServingError: INVALID_ARGUMENT when the proto is inconsistent (values vs shape).
    """
    shape = _shape_of(proto)
    count = math.prod(shape)
    dtype = proto.dtype
    if dtype == dtypes.DT_STRING:
        values = proto.string_val
        if len(values) != count:
            raise invalid_argument(
                f"string tensor of shape {list(shape)} holds {len(values)} values, not {count}"
            )
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    np_dtype = dtypes.NUMPY_DTYPES.get(dtype)
    field = _VALUE_FIELDS.get(dtype)
    if np_dtype is None or field is None:
        return _to_ndarray_with_tf(proto)
    if proto.tensor_content:
        content = proto.tensor_content
        if len(content) != count * np_dtype.itemsize:
            raise invalid_argument(
                f"tensor_content holds {len(content)} bytes, shape {list(shape)} of "
                f"{dtypes.short_name(dtype)} needs {count * np_dtype.itemsize}"
            )
        return np.frombuffer(content, dtype=np_dtype).reshape(shape)
    values = getattr(proto, field)
    if len(values) == count:
        return np.array(values, dtype=np_dtype).reshape(shape)
    if len(values) > count:
        raise invalid_argument(
            f"tensor of shape {list(shape)} holds {len(values)} values, more than {count}"
        )
    # TensorFlow's rule: missing trailing values repeat the last one (zeros when none).
    array = np.zeros(count, dtype=np_dtype)
    if len(values):
        array[: len(values)] = values
        array[len(values) :] = values[-1]
    return array.reshape(shape)


def _to_ndarray_with_tf(proto: tensor_pb2.TensorProto) -> np.ndarray:
    import tensorflow as tf

    try:
        return tf.make_ndarray(proto)
    except Exception as exc:
        raise invalid_argument(f"cannot read tensor of dtype enum {proto.dtype}: {exc}") from None


def from_ndarray(array: np.ndarray, out: tensor_pb2.TensorProto | None = None):
    """Converts a NumPy array to a TensorProto the way tf.make_tensor_proto does.

    Numbers go to `tensor_content`; strings (bytes, str or object arrays) to `string_val`.

    Args:
        array: the values.
        out: an empty TensorProto to fill in place (e.g. a response map entry), else a new one.
    """
    array = np.asarray(array)
    dtype = dtypes.dtype_enum(array)
    proto = tensor_pb2.TensorProto() if out is None else out
    proto.dtype = dtype
    dims = proto.tensor_shape.dim
    for size in array.shape:
        dims.add(size=size)
    if dtype == dtypes.DT_STRING:
        proto.string_val.extend(
            v.encode() if isinstance(v, str) else bytes(v) for v in array.reshape(-1).tolist()
        )
    else:
        proto.tensor_content = np.ascontiguousarray(array).tobytes()
    return proto
