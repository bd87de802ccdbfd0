"""The NumPy TensorProto path gives exactly what tf.make_tensor_proto / tf.make_ndarray give."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.serving.errors import Code, ServingError
from kerasflow.serving.tensors import from_ndarray, to_ndarray

pytestmark = pytest.mark.unit

ARRAYS = [
    np.array([[0.1, -2.5e-7, np.inf], [np.nan, 3.4e38, -0.0]], dtype=np.float32),
    np.arange(12, dtype=np.float64).reshape(2, 3, 2) / 7,
    np.array([[-(2**31), 2**31 - 1]], dtype=np.int32),
    np.array([-(2**63), 2**63 - 1, 0], dtype=np.int64),
    np.array([0, 255, 7], dtype=np.uint8),
    np.array([-128, 127], dtype=np.int8),
    np.array([-(2**15), 2**15 - 1], dtype=np.int16),
    np.array([0, 2**16 - 1], dtype=np.uint16),
    np.array([0, 2**32 - 1], dtype=np.uint32),
    np.array([0, 2**64 - 1], dtype=np.uint64),
    np.array([[True, False, True]]),
    np.array([1.5, -2.25], dtype=np.float16),
    np.zeros((0, 3), dtype=np.float32),
    np.float32(4.5).reshape(()),
    np.array([[b"paris"], [b"\x00\xffbinary"]], dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: f"{a.dtype}{list(a.shape)}")
def test_protos_match_tensorflows_own_conversion_both_ways(array):
    import tensorflow as tf

    ours = from_ndarray(array)
    theirs = tf.make_tensor_proto(array)
    assert ours.dtype == theirs.dtype
    assert [d.size for d in ours.tensor_shape.dim] == list(array.shape)
    np.testing.assert_array_equal(tf.make_ndarray(ours), array)
    back = to_ndarray(theirs)
    assert back.dtype == array.dtype
    np.testing.assert_array_equal(back, array)


def test_str_arrays_become_utf8_strings():
    import tensorflow as tf

    proto = from_ndarray(np.array([["héllo", "b"]]))
    assert list(tf.make_ndarray(proto).ravel()) == ["héllo".encode(), b"b"]


@pytest.mark.parametrize(
    "values",
    [
        {"dtype": "DT_FLOAT", "float_val": [1.5, 2.5, 3.5, 4.5]},
        {"dtype": "DT_INT64", "int64_val": [1, 2, 3, 4]},
        {"dtype": "DT_INT32", "int_val": [7]},
        {"dtype": "DT_BOOL", "bool_val": [True, False]},
        {"dtype": "DT_DOUBLE"},
    ],
    ids=["float_val", "int64_val", "repeat-last", "bool-repeat-last", "no-values-zeros"],
)
def test_typed_value_fields_read_like_make_ndarray(values):
    import tensorflow as tf
    from google.protobuf import json_format
    from tensorflow.core.framework import tensor_pb2

    proto = json_format.ParseDict(
        {**values, "tensor_shape": {"dim": [{"size": 2}, {"size": 2}]}}, tensor_pb2.TensorProto()
    )
    expected = tf.make_ndarray(proto)
    got = to_ndarray(proto)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_inconsistent_protos_are_invalid_arguments():
    from tensorflow.core.framework import tensor_pb2

    proto = from_ndarray(np.zeros((2, 3), dtype=np.float32))
    proto.tensor_content = proto.tensor_content[:-1]
    with pytest.raises(ServingError) as info:
        to_ndarray(proto)
    assert info.value.code == Code.INVALID_ARGUMENT
    strings = tensor_pb2.TensorProto(dtype=7, string_val=[b"a"])
    strings.tensor_shape.dim.add(size=2)
    with pytest.raises(ServingError, match="holds 1 values, not 2"):
        to_ndarray(strings)
    too_many = tensor_pb2.TensorProto(dtype=1, float_val=[1, 2, 3])
    too_many.tensor_shape.dim.add(size=2)
    with pytest.raises(ServingError, match="more than 2"):
        to_ndarray(too_many)
