"""TF Serving warmup files: `assets.extra/tf_serving_warmup_requests`.

A TFRecord file of tensorflow.serving.PredictionLog records. TF Serving replays them right after
loading a version, before the version takes traffic, and a failing record fails the load; this
server does the same.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from kerasflow.serving.errors import Code, ServingError, invalid_argument
from kerasflow.serving.signature import DEFAULT_SIGNATURE, check_inputs

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
# TF Serving refuses warmup files with more records than this.
MAX_WARMUP_RECORDS = 1000


def warmup_path(version_dir: str | Path) -> Path:
    """Where a version's warmup file lives."""
    return Path(version_dir, WARMUP_DIR, WARMUP_FILE)


def read_warmup_requests(version_dir: str | Path) -> list:
    """The PredictRequests of a version's warmup file ([] when it has none).

    Raises:
        ServingError: when the file is corrupt, too long or holds other kinds of logs.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(version_dir)
    if not path.is_file():
        return []
    requests = []
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            if len(requests) >= MAX_WARMUP_RECORDS:
                raise ServingError(
                    Code.INVALID_ARGUMENT,
                    f"warmup file {path} has more than {MAX_WARMUP_RECORDS} records",
                )
            entry = prediction_log_pb2.PredictionLog.FromString(record)
            kind = entry.WhichOneof("log_type")
            if kind != "predict_log":
                raise ServingError(
                    Code.UNIMPLEMENTED,
                    f"warmup record {len(requests)} in {path} is a {kind}; only predict_log "
                    "records are supported",
                )
            requests.append(entry.predict_log.request)
    except tf.errors.OpError as exc:
        raise ServingError(
            Code.DATA_LOSS, f"cannot read warmup file {path}: {exc.message}"
        ) from None
    except ServingError:
        raise
    except Exception as exc:
        raise ServingError(Code.DATA_LOSS, f"bad warmup record in {path}: {exc}") from None
    return requests


def replay_warmup(servable, version_dir: str | Path) -> int:
    """Runs every warmup request against `servable`; returns how many ran.

    Raises:
        ServingError: naming the record that failed.
    """
    from kerasflow.serving.tensors import to_ndarray

    requests = read_warmup_requests(version_dir)
    for i, request in enumerate(requests):
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature(name)
        try:
            if signature is None:
                raise invalid_argument(f"signature {name!r} not found")
            inputs = {k: to_ndarray(v) for k, v in request.inputs.items()}
            signature.run(check_inputs(signature.inputs, inputs))
        except ServingError as exc:
            raise ServingError(exc.code, f"warmup request {i} failed: {exc.message}") from None
    return len(requests)


def write_warmup_file(version_dir: str | Path, requests: Iterable) -> Path:
    """Writes PredictRequests as a TF Serving warmup file, atomically (temp then rename).

    Returns:
        The path of the file written.
    """
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    path = warmup_path(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{WARMUP_FILE}.", dir=path.parent)
    os.close(fd)
    try:
        with tf.io.TFRecordWriter(tmp) as writer:
            for request in requests:
                entry = prediction_log_pb2.PredictionLog(
                    predict_log=prediction_log_pb2.PredictLog(request=request)
                )
                writer.write(entry.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path
