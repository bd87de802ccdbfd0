"""One loaded model version: its SignatureDefs, callable signatures and their batchers.

The SignatureDefs are read from saved_model.pb, as TF Serving reads them, for metadata and request
checks; the callables come from tf.saved_model.load. Every request path (REST, gRPC, warmup,
infra validation) ends in `Signature.run`, so they all run the model the same way.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from kerasflow.serving.batching import (
    AsyncBatcher,
    AsyncDirectRunner,
    Batcher,
    BatchingOptions,
    BatchStats,
    DirectRunner,
)
from kerasflow.serving.errors import Code, ServingError, invalid_argument
from kerasflow.serving.signature import TensorSpec, check_inputs

log = logging.getLogger(__name__)

SAVED_MODEL_PB = "saved_model.pb"
SERVE_TAG = "serve"


class _FlatCall:
    """Calls a loaded signature with its flat list of tensors, as its structured call ends up doing.

    A signature called with keyword tensors first matches them against its FunctionType in
    Python, which costs about as much as running a small model. The signature's parameters are
    plain tensors in a fixed order, so after a check of dtypes and shapes here the tensors go
    straight to the same `_call_flat` the structured call ends in. Inputs the check refuses take
    the structured call, which raises TensorFlow's own error for them.
    """

    def __init__(self, fn, names: tuple[str, ...], specs: tuple[tuple, ...]):
        self._call = fn._call_flat
        self._fn = fn
        self.names = names
        # (numpy dtype, shape with None for unknown dims) of each parameter, in call order.
        self._specs = specs

    @classmethod
    def of(cls, fn) -> _FlatCall | None:
        """The flat call of `fn`, or None when its parameters are not plain named tensors."""
        import tensorflow as tf

        try:
            function_type = fn.function_type
            parameters = list(function_type.parameters.values())
            flat = list(function_type.flat_inputs)
            fn._call_flat  # noqa: B018 (present on every ConcreteFunction this code knows)
        except AttributeError:
            return None
        if function_type is None or not parameters or len(parameters) != len(flat):
            return None
        names, specs = [], []
        for parameter, spec in zip(parameters, flat, strict=True):
            constraint = parameter.type_constraint
            if (
                parameter.kind != parameter.KEYWORD_ONLY
                or type(constraint) is not tf.TensorSpec
                or constraint != spec
            ):
                return None
            shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
            names.append(parameter.name)
            specs.append((np.dtype(spec.dtype.as_numpy_dtype), shape))
        return cls(fn, tuple(names), tuple(specs))

    def __call__(self, inputs: Mapping[str, np.ndarray]):
        """The signature's outputs (tensors by name) for `inputs` (arrays by name)."""
        import tensorflow as tf

        if len(inputs) == len(self.names):
            arrays = []
            for name, (dtype, shape) in zip(self.names, self._specs, strict=True):
                array = inputs.get(name)
                if (
                    not isinstance(array, np.ndarray)
                    or array.dtype != dtype
                    or not _fits(shape, array.shape)
                ):
                    break
                arrays.append(array)
            else:
                tensors = [tf.constant(a) for a in arrays]
                return self._call(tensors, self._fn.captured_inputs)
        return _structured_call(self._fn, inputs)


def _structured_call(fn, inputs: Mapping[str, np.ndarray]):
    import tensorflow as tf

    return fn(**{k: tf.constant(v) for k, v in inputs.items()})


def _fits(expected: tuple | None, got: tuple[int, ...]) -> bool:
    if expected is None:
        return True
    if len(expected) != len(got):
        return False
    return all(e is None or e == g for e, g in zip(expected, got, strict=True))


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0]


class Signature:
    """A callable signature with the specs of its inputs and outputs."""

    def __init__(self, name: str, signature_def, fn, batching: BatchingOptions | None):
        self.name = name
        self.method_name = signature_def.method_name
        self.inputs = {
            k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.inputs.items()
        }
        self.outputs = {
            k: TensorSpec.from_tensor_info(k, v) for k, v in signature_def.outputs.items()
        }
        self._fn = fn
        self._call = _FlatCall.of(fn) or functools.partial(_structured_call, fn)
        self._batching = batching or BatchingOptions(max_batch_size=1)
        self._runner: Batcher | DirectRunner | None = None
        self._runner_lock = threading.Lock()
        # The batcher of coroutines on one event loop, and that loop.
        self._async_runner: tuple[asyncio.AbstractEventLoop, AsyncBatcher] | None = None
        # Without batching, how coroutines run the model (on the loop or on the executor).
        self._async_direct: AsyncDirectRunner | None = None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calls the model directly on checked inputs; returns its outputs as NumPy arrays.

        Raises:
            ServingError: INVALID_ARGUMENT when TensorFlow rejects the values, the op's own
                code for other TensorFlow errors.
        """
        import tensorflow as tf

        try:
            outputs = self._call(inputs)
        except tf.errors.OpError as exc:
            raise ServingError(Code(exc.error_code), _first_line(exc)) from None
        except (TypeError, ValueError) as exc:
            raise invalid_argument(_first_line(exc)) from None
        return {k: v.numpy() for k, v in outputs.items()}

    @property
    def runner(self) -> Batcher | DirectRunner:
        """The batcher (or direct runner) requests go through; made on first use."""
        runner = self._runner
        if runner is None:
            with self._runner_lock:
                if self._runner is None:
                    if self._batching.enabled:
                        self._runner = Batcher(self.run, self._batching)
                    else:
                        self._runner = DirectRunner(self.run)
                runner = self._runner
        return runner

    @property
    def stats(self) -> BatchStats:
        """Batching counters over both request paths (threads and the event loop)."""
        parts = [self.runner.stats]
        if self._async_runner is not None:
            parts.append(self._async_runner[1].stats)
        return BatchStats(
            batches=sum(p.batches for p in parts),
            requests=sum(p.requests for p in parts),
            max_requests_in_batch=max(p.max_requests_in_batch for p in parts),
            max_rows_in_batch=max(p.max_rows_in_batch for p in parts),
        )

    def predict(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Checks `inputs`, runs them (batched with concurrent requests) and returns the outputs.

        Raises:
            ServingError: INVALID_ARGUMENT when the inputs do not fit the signature or
                TensorFlow rejects their values.
        """
        checked, rows = self._checked(inputs)
        return self.runner.run(checked, rows)

    async def predict_async(
        self, inputs: Mapping[str, np.ndarray], executor: concurrent.futures.Executor
    ) -> dict[str, np.ndarray]:
        """`predict` for a coroutine: the model runs on `executor`, never on the event loop.

        Raises:
            ServingError: as `predict`.
        """
        checked, rows = self._checked(inputs)
        loop = asyncio.get_running_loop()
        if not self._batching.enabled:
            self.runner.stats.requests += 1
            if self._async_direct is None:
                self._async_direct = AsyncDirectRunner(self.run)
            return await self._async_direct.run(checked, executor)
        if self._async_runner is None or self._async_runner[0] is not loop:
            self._async_runner = (loop, AsyncBatcher(self.run, self._batching, executor))
        return await self._async_runner[1].run(checked, rows)

    def _checked(self, inputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        checked = check_inputs(self.inputs, inputs)
        return checked, next((a.shape[0] for a in checked.values() if a.ndim), 0)


class Servable:
    """A loaded version of a model."""

    def __init__(self, name: str, version: int, path: str, signature_defs, signatures, owner=None):
        self.name = name
        self.version = version
        self.path = path
        # A tensorflow.serving.SignatureDefMap of every SignatureDef in the export.
        self.signature_defs = signature_defs
        self.signatures: dict[str, Signature] = signatures
        # The object from tf.saved_model.load owns the variables the signatures capture.
        self._owner = owner
        self.closed = False

    def signature(self, name: str) -> Signature | None:
        """The callable signature called `name`, or None."""
        return self.signatures.get(name)

    def close(self) -> None:
        """Marks the version unloaded.

        TensorFlow's objects are freed with the last reference, so requests that picked this
        version just before it was unloaded still finish on it.
        """
        self.closed = True

    def __repr__(self):
        return f"Servable({self.name!r}, version={self.version}, path={self.path!r})"


def read_signature_defs(export_dir: str | Path):
    """The SignatureDefMap of the `serve` MetaGraph in `export_dir/saved_model.pb`.

    Raises:
        ServingError: NOT_FOUND when there is no saved_model.pb or serve MetaGraph, DATA_LOSS
            when the file does not parse.
    """
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    pb = Path(export_dir, SAVED_MODEL_PB)
    try:
        data = pb.read_bytes()
    except FileNotFoundError:
        raise ServingError(
            Code.NOT_FOUND, f"SavedModel file does not exist at: {export_dir}/{SAVED_MODEL_PB}"
        ) from None
    except OSError as exc:
        raise ServingError(Code.UNKNOWN, f"cannot read {pb}: {exc.strerror}") from None
    try:
        saved_model = saved_model_pb2.SavedModel.FromString(data)
    except (DecodeError, RuntimeWarning, ValueError):
        raise ServingError(Code.DATA_LOSS, f"Can't parse {pb} as binary proto") from None
    for meta_graph in saved_model.meta_graphs:
        if SERVE_TAG in meta_graph.meta_info_def.tags:
            result = get_model_metadata_pb2.SignatureDefMap()
            for key, value in meta_graph.signature_def.items():
                result.signature_def[key].CopyFrom(value)
            return result
    raise ServingError(
        Code.NOT_FOUND,
        f"Could not find meta graph def matching supplied tags: {{ {SERVE_TAG} }} in {pb}",
    )


def load_servable(
    export_dir: str | Path,
    name: str,
    version: int,
    batching: BatchingOptions | None = None,
    warmup: bool = True,
) -> Servable:
    """Loads a SavedModel version and replays its warmup requests, as TF Serving does.

    Args:
        export_dir: a local version folder (saved_model.pb, variables/, assets.extra/).
        name: the model name the servable answers to.
        version: its version number.
        batching: batching for its signatures (None: no batching).
        warmup: replay `assets.extra/tf_serving_warmup_requests` when present.

    Raises:
        ServingError: with a canonical code when the export does not load or warm up.
    """
    import tensorflow as tf

    from kerasflow.serving import warmup as warmup_mod

    export_dir = str(export_dir)
    signature_defs = read_signature_defs(export_dir)
    try:
        loaded = tf.saved_model.load(export_dir, tags=[SERVE_TAG])
    except tf.errors.OpError as exc:
        raise ServingError(Code(exc.error_code), _first_line(exc)) from None
    except Exception as exc:
        raise ServingError(Code.UNKNOWN, f"cannot load {export_dir}: {_first_line(exc)}") from None
    signatures = {}
    for key, fn in loaded.signatures.items():
        if key in signature_defs.signature_def:
            signatures[key] = Signature(key, signature_defs.signature_def[key], fn, batching)
    servable = Servable(name, version, export_dir, signature_defs, signatures, owner=loaded)
    if warmup:
        try:
            count = warmup_mod.replay_warmup(servable, export_dir)
        except BaseException:
            servable.close()
            raise
        if count:
            log.info("model %s version %d: replayed %d warmup requests", name, version, count)
    return servable
