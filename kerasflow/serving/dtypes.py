"""TensorFlow DataType enums and their NumPy counterparts, without importing TensorFlow.

The REST client and JSON codec need these tables, and importing TensorFlow costs seconds.
"""

from __future__ import annotations

import numpy as np

DT_FLOAT = 1
DT_DOUBLE = 2
DT_INT32 = 3
DT_UINT8 = 4
DT_INT16 = 5
DT_INT8 = 6
DT_STRING = 7
DT_INT64 = 9
DT_BOOL = 10
DT_UINT16 = 17
DT_HALF = 19
DT_UINT32 = 22
DT_UINT64 = 23

# Strings are object arrays of bytes, the form tf.make_ndarray gives.
NUMPY_DTYPES: dict[int, np.dtype] = {
    DT_FLOAT: np.dtype(np.float32),
    DT_DOUBLE: np.dtype(np.float64),
    DT_INT32: np.dtype(np.int32),
    DT_UINT8: np.dtype(np.uint8),
    DT_INT16: np.dtype(np.int16),
    DT_INT8: np.dtype(np.int8),
    DT_STRING: np.dtype(object),
    DT_INT64: np.dtype(np.int64),
    DT_BOOL: np.dtype(np.bool_),
    DT_UINT16: np.dtype(np.uint16),
    DT_HALF: np.dtype(np.float16),
    DT_UINT32: np.dtype(np.uint32),
    DT_UINT64: np.dtype(np.uint64),
}

DT_NAMES: dict[int, str] = {
    DT_FLOAT: "DT_FLOAT",
    DT_DOUBLE: "DT_DOUBLE",
    DT_INT32: "DT_INT32",
    DT_UINT8: "DT_UINT8",
    DT_INT16: "DT_INT16",
    DT_INT8: "DT_INT8",
    DT_STRING: "DT_STRING",
    DT_INT64: "DT_INT64",
    DT_BOOL: "DT_BOOL",
    DT_UINT16: "DT_UINT16",
    DT_HALF: "DT_HALF",
    DT_UINT32: "DT_UINT32",
    DT_UINT64: "DT_UINT64",
}
DT_BY_NAME: dict[str, int] = {name: num for num, name in DT_NAMES.items()}

# Short names as TF error messages spell them ("expects float but got string").
SHORT_NAMES: dict[int, str] = {num: name[3:].lower() for num, name in DT_NAMES.items()}


def dtype_enum(array: np.ndarray) -> int:
    """The DataType enum for a NumPy array (bytes, str and object arrays map to DT_STRING).

    Raises:
        TypeError: for dtypes TensorFlow has no counterpart for here.
    """
    kind = array.dtype.kind
    if kind in "OSU":
        return DT_STRING
    for num, np_dtype in NUMPY_DTYPES.items():
        if np_dtype == array.dtype:
            return num
    raise TypeError(f"no TensorFlow dtype for NumPy dtype {array.dtype}")


def short_name(dtype: int) -> str:
    """'float', 'string', ... for a DataType enum (the enum number when unknown)."""
    return SHORT_NAMES.get(dtype, f"dtype {dtype}")
