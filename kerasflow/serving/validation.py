"""Infra validation for the deploy step: does an export load and answer the way we serve it?

`validate_export` loads a SavedModel with the server's own loader (warmup replay included) and
runs the serving signature through the server's request path (input checks, batcher, model call),
so a model that passes here is one the server can serve. `write_warmup_requests` writes the
TF Serving warmup file that both this server and the official one replay at load time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kerasflow.runtime import fileio
from kerasflow.runtime.errors import UserError
from kerasflow.serving.errors import InfraValidationError, ServingError
from kerasflow.serving.signature import DEFAULT_SIGNATURE

OUTPUT_KEY = "output_0"


def _as_arrays(sample_inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in sample_inputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "US":
            # Strings are fed as bytes, as they arrive from gRPC and REST.
            encoded = np.empty(array.size, dtype=object)
            encoded[:] = [s.encode() if isinstance(s, str) else s for s in array.ravel().tolist()]
            array = encoded.reshape(array.shape)
        arrays[name] = array
    return arrays


def validate_export(
    export_dir: str | Path,
    sample_inputs: Mapping[str, np.ndarray],
    signature_name: str = DEFAULT_SIGNATURE,
    output_key: str = OUTPUT_KEY,
) -> np.ndarray:
    """Loads an export as the server does and runs `sample_inputs` through it.

    Args:
        export_dir: a model version folder (local or gs://) holding a SavedModel.
        sample_inputs: a batch of inputs keyed by the signature's input names.
        signature_name: the signature to run.
        output_key: the output to return.

    Returns:
        The signature's `output_key` output for the batch.

    Raises:
        InfraValidationError: when the export does not load or warm up, the inputs do not fit
            the signature, the model fails, or the answer does not have one row per input row.
    """
    from kerasflow.serving.batching import BatchingOptions
    from kerasflow.serving.servable import load_servable

    where = str(export_dir)
    arrays = _as_arrays(sample_inputs)
    rows = {a.shape[0] for a in arrays.values() if a.ndim}
    with contextlib.ExitStack() as stack:
        try:
            local = stack.enter_context(fileio.local_copy(where))
        except UserError as exc:
            raise InfraValidationError(f"infra validation of {where} failed: {exc}") from None
        try:
            servable = load_servable(local, "infra-validation", 0, batching=BatchingOptions())
        except ServingError as exc:
            raise InfraValidationError(
                f"infra validation of {where} failed: the model does not load: {exc.message}"
            ) from None
        try:
            signature = servable.signature(signature_name)
            if signature is None:
                raise InfraValidationError(
                    f"infra validation of {where} failed: no signature {signature_name!r} "
                    f"(has {', '.join(sorted(servable.signatures)) or 'none'})"
                )
            try:
                outputs = signature.predict(arrays)
            except ServingError as exc:
                raise InfraValidationError(
                    f"infra validation of {where} failed: the model does not answer: {exc.message}"
                ) from None
        finally:
            servable.close()
    if output_key not in outputs:
        raise InfraValidationError(
            f"infra validation of {where} failed: no output {output_key!r} "
            f"(has {', '.join(sorted(outputs))})"
        )
    result = outputs[output_key]
    if rows and (result.ndim == 0 or result.shape[0] not in rows):
        raise InfraValidationError(
            f"infra validation of {where} failed: {output_key} has shape {list(result.shape)} "
            f"for {rows.pop()} input rows"
        )
    return np.array(result)


def write_warmup_requests(
    export_dir: str | Path,
    model_name: str,
    sample_inputs: Mapping[str, np.ndarray],
    n: int = 1,
    signature_name: str = DEFAULT_SIGNATURE,
) -> Path:
    """Writes `assets.extra/tf_serving_warmup_requests` into a local export folder.

    The file holds `n` PredictionLog records, each a PredictRequest for `model_name` carrying the
    whole sample batch. TF Serving (and this server) replay them after loading the version and
    before it takes traffic, so the first real request does not pay for lazy initialisation.

    Args:
        export_dir: the local version folder (write before publishing it).
        model_name: the served model name the requests name.
        sample_inputs: a batch of inputs keyed by the signature's input names.
        n: how many records to write (at least 1).
        signature_name: the signature the requests call.

    Returns:
        The path of the warmup file.

    Raises:
        UserError: when the folder holds no SavedModel or the inputs do not match its signature.
    """
    from tensorflow_serving.apis import predict_pb2

    from kerasflow.serving.servable import read_signature_defs
    from kerasflow.serving.tensors import from_ndarray
    from kerasflow.serving.warmup import MAX_WARMUP_RECORDS, write_warmup_file

    if not 1 <= n <= MAX_WARMUP_RECORDS:
        raise UserError(f"warmup request count must be within 1..{MAX_WARMUP_RECORDS}, got {n}")
    try:
        defs = read_signature_defs(export_dir)
    except ServingError as exc:
        raise UserError(f"cannot write warmup requests: {exc.message}") from None
    if signature_name not in defs.signature_def:
        raise UserError(f"cannot write warmup requests: {export_dir} has no {signature_name!r}")
    expected = set(defs.signature_def[signature_name].inputs)
    arrays = _as_arrays(sample_inputs)
    if set(arrays) != expected:
        raise UserError(
            f"warmup inputs {sorted(arrays)} do not match the signature's inputs {sorted(expected)}"
        )
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name
    for name, array in arrays.items():
        from_ndarray(array, out=request.inputs[name])
    return write_warmup_file(export_dir, [request] * n)
