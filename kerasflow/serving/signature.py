"""What a signature accepts, and the checks a request must pass before it reaches the model.

Specs come from the SignatureDef in saved_model.pb (the same source TF Serving validates
against), so the messages a client gets are about the signature it can read in the metadata.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from kerasflow.serving import dtypes
from kerasflow.serving.errors import invalid_argument

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
DEFAULT_SIGNATURE = "serving_default"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """dtype (DataType enum) and shape (None for unknown dims, None for unknown rank)."""

    name: str
    dtype: int
    shape: tuple[int | None, ...] | None

    @property
    def numpy_dtype(self) -> np.dtype:
        """The NumPy dtype requests are converted to."""
        return dtypes.NUMPY_DTYPES.get(self.dtype, np.dtype(object))

    def shape_text(self) -> str:
        """The shape as TF Serving prints it: [-1,8,8,1]."""
        if self.shape is None:
            return "<unknown>"
        return "[" + ",".join("-1" if d is None else str(d) for d in self.shape) + "]"

    @classmethod
    def from_tensor_info(cls, name: str, info) -> TensorSpec:
        """Builds a spec from a tensorflow.TensorInfo message."""
        if info.tensor_shape.unknown_rank:
            shape = None
        else:
            shape = tuple(None if d.size < 0 else d.size for d in info.tensor_shape.dim)
        return cls(name=name, dtype=info.dtype, shape=shape)


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_inputs(
    specs: Mapping[str, TensorSpec], inputs: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """Checks names, dtypes and shapes of request tensors against a signature's inputs.

    Args:
        specs: the signature's inputs by name.
        inputs: the request's tensors by name, already NumPy arrays of the right dtype
            family (the codecs convert JSON values; gRPC tensors keep the client's dtype).

    Returns:
        The inputs, ready to be fed to the signature.

    Raises:
        ServingError: INVALID_ARGUMENT naming the first problem found.
    """
    if set(inputs) != set(specs):
        extra = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        raise invalid_argument(
            f"input size does not match signature: {len(inputs)}!={len(specs)} "
            f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(specs))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}."
        )
    batch = None
    for name, spec in specs.items():
        array = inputs[name]
        try:
            got = dtypes.dtype_enum(array)
        except TypeError:
            got = None
        if got != spec.dtype:
            provided = dtypes.short_name(got) if got is not None else str(array.dtype)
            raise invalid_argument(
                f"input '{name}' expects {dtypes.short_name(spec.dtype)} but {provided} is provided"
            )
        if spec.shape is not None and not _shape_matches(spec.shape, array.shape):
            raise invalid_argument(
                f"input '{name}' expects shape {spec.shape_text()} but got "
                f"{_shape_text(array.shape)}"
            )
        if array.ndim:
            if batch is None:
                batch = array.shape[0]
            elif array.shape[0] != batch:
                raise invalid_argument(
                    "input tensors must have equal 0th-dimension size (batch size); "
                    f"input '{name}' has {array.shape[0]}, others {batch}"
                )
    return dict(inputs)


def _shape_matches(expected: tuple[int | None, ...], got: tuple[int, ...]) -> bool:
    if len(expected) != len(got):
        return False
    return all(e is None or e == g for e, g in zip(expected, got, strict=True))


def batch_size(inputs: Mapping[str, np.ndarray]) -> int:
    """The 0th dimension shared by the inputs (0 when inputs are scalars)."""
    for array in inputs.values():
        return array.shape[0] if array.ndim else 0
    return 0
