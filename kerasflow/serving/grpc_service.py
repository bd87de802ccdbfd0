"""TF Serving's gRPC API: PredictionService and ModelService on grpc's asyncio server.

Predict decodes and encodes tensors on the event loop and hands the model call to the
signature's AsyncBatcher: concurrent calls wait as futures while one merged call runs on a pool
thread, so the loop keeps taking requests meanwhile (see batching.py). Without batching it goes
to an AsyncDirectRunner: calls run side by side on pool threads, or on the loop itself while
they are quick and come one at a time, which spares two thread switches a call. The other
methods are rare and may block (a config reload loads models), so they run whole on the pool.
grpc's threaded server spends more CPU per call than the asyncio one, which caps throughput.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from kerasflow.runtime.errors import UserError
from kerasflow.serving import protocol, tensors
from kerasflow.serving.config import ModelConfig, configs_from_proto
from kerasflow.serving.errors import Code, ServingError, invalid_argument
from kerasflow.serving.manager import ModelManager
from kerasflow.serving.metrics import ServingMetrics
from kerasflow.serving.request_logger import RequestLogger
from kerasflow.serving.servable import Servable
from kerasflow.serving.signature import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD

log = logging.getLogger(__name__)


def _servable(manager: ModelManager, spec) -> Servable:
    if not spec.name:
        raise invalid_argument("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    label = spec.version_label if choice == "version_label" else None
    return manager.get_servable(spec.name, version, label)


def _guard(method):
    """ServingErrors become gRPC status codes and our bugs INTERNAL."""

    @functools.wraps(method)
    async def wrapper(self, request, context):
        started = time.perf_counter()

        def counted(code: str, response=None) -> None:
            # Counted before the answer leaves: a client that has its answer sees it counted.
            serving_metrics = getattr(self, "_metrics", None)
            if serving_metrics is not None and method.__name__ in _INFERENCE:
                _count(serving_metrics, method.__name__, request, response, code, started)

        try:
            response = await method(self, request)
        except ServingError as exc:
            counted(exc.code.name)
            await context.abort(grpc.StatusCode[exc.code.name], exc.message)
        except Exception as exc:
            log.exception("error in %s", method.__name__)
            counted("INTERNAL")
            await context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        counted("OK", response)
        return response

    return wrapper


# The calls that run a model; metadata and status calls are not counted as requests.
_INFERENCE = frozenset({"Predict", "Classify", "Regress", "MultiInference"})


def _count(serving_metrics, api: str, request, response, code: str, started: float) -> None:
    spec = getattr(request, "model_spec", None)
    answered = getattr(response, "model_spec", None)
    version = (
        answered.version.value if answered is not None and answered.HasField("version") else None
    )
    serving_metrics.observe(
        model=spec.name if spec is not None else "",
        version=version,
        signature=(spec.signature_name if spec is not None else "") or DEFAULT_SIGNATURE,
        api=f"grpc:{api}",
        status=code,
        started=started,
    )


def _in_pool(method):
    """Runs a blocking handler on the service's pool, off the event loop."""

    @functools.wraps(method)
    async def wrapper(self, request):
        return await asyncio.get_running_loop().run_in_executor(self._pool, method, self, request)

    return wrapper


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """tensorflow.serving.PredictionService over a ModelManager."""

    def __init__(
        self,
        manager: ModelManager,
        pool: concurrent.futures.Executor,
        metrics: ServingMetrics | None = None,
        request_log: RequestLogger | None = None,
    ):
        self._manager = manager
        self._pool = pool
        self._metrics = metrics
        self._request_log = request_log

    @_guard
    async def Predict(self, request):  # noqa: N802 (the proto's naming)
        """Runs a predict signature on the request's tensors."""
        servable = _servable(self._manager, request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature(name)
        if signature is None:
            raise ServingError(
                Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.'
            )
        wanted = list(request.output_filter)
        for alias in wanted:
            if alias not in signature.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} Outputs expected to "
                    f"be in the set {{{','.join(sorted(signature.outputs))}}}."
                )
        if len(set(wanted)) != len(wanted):
            raise invalid_argument("duplicate output tensor alias in output_filter")
        inputs = {k: tensors.to_ndarray(v) for k, v in request.inputs.items()}
        outputs = await signature.predict_async(inputs, self._pool)
        response = predict_pb2.PredictResponse(model_spec=protocol.model_spec(servable, name))
        answered = wanted or list(outputs)
        for alias in answered:
            tensors.from_ndarray(outputs[alias], out=response.outputs[alias])
        if self._request_log is not None:
            self._request_log.offer(
                model=servable.name,
                version=servable.version,
                signature=name,
                method="predict",
                inputs=inputs,
                outputs={alias: outputs[alias] for alias in answered},
            )
        return response

    @_guard
    @_in_pool
    def GetModelMetadata(self, request):  # noqa: N802
        """Returns the signature_def metadata of a model version."""
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in fields:
            if field != protocol.SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        return protocol.metadata_response(_servable(self._manager, request.model_spec))

    def _classify_or_regress(self, request, kind: str, wanted: str):
        servable = _servable(self._manager, request.model_spec)
        name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signature(name)
        if signature is None:
            raise invalid_argument(f"No signature was found with the name: {name}")
        if signature.method_name != wanted:
            raise invalid_argument(
                f"Expected {kind} signature method_name to be {wanted}. "
                f"Was: {signature.method_name}"
            )
        raise ServingError(Code.UNIMPLEMENTED, f"{kind} signatures are not supported here")

    @_guard
    @_in_pool
    def Classify(self, request):  # noqa: N802
        """Classify needs a classification signature, which Keras exports do not have."""
        return self._classify_or_regress(request, "classification", CLASSIFY_METHOD)

    @_guard
    @_in_pool
    def Regress(self, request):  # noqa: N802
        """Regress needs a regression signature, which Keras exports do not have."""
        return self._classify_or_regress(request, "regression", REGRESS_METHOD)

    @_guard
    @_in_pool
    def MultiInference(self, request):  # noqa: N802
        """Not served: it combines classify and regress signatures."""
        raise ServingError(Code.UNIMPLEMENTED, "MultiInference is not supported here")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """tensorflow.serving.ModelService: version status and config reloads."""

    def __init__(
        self,
        manager: ModelManager,
        pool: concurrent.futures.Executor,
        on_reload: Callable[[list[ModelConfig]], None],
    ):
        self._manager = manager
        self._pool = pool
        self._on_reload = on_reload

    @_guard
    @_in_pool
    def GetModelStatus(self, request):  # noqa: N802
        """Reports the state of a model's versions."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        spec = request.model_spec
        choice = spec.WhichOneof("version_choice")
        statuses = self._manager.model_status(
            spec.name,
            spec.version.value if choice == "version" else None,
            spec.version_label if choice == "version_label" else None,
        )
        return protocol.status_response(statuses)

    @_guard
    @_in_pool
    def HandleReloadConfigRequest(self, request):  # noqa: N802
        """Serves the models of a new ModelServerConfig (loads happen before the answer)."""
        try:
            configs = configs_from_proto(request.config)
        except UserError as exc:
            raise invalid_argument(str(exc)) from None
        try:
            self._on_reload(configs)
        except UserError as exc:  # a label on a version that is not available
            raise ServingError(Code.FAILED_PRECONDITION, str(exc)) from None
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = int(Code.OK)
        return response


class GrpcServer:
    """Runs the gRPC services on an asyncio server in a thread of its own.

    Args:
        manager: where models are looked up.
        host: address to bind.
        port: port to bind (0 picks a free one).
        max_request_bytes: larger messages are refused with RESOURCE_EXHAUSTED.
        on_reload: applies configs sent with HandleReloadConfigRequest.
        max_threads: calls worked on at once (more wait for a pool thread).
        metrics: where answered inference calls are counted (None: not counted).
        request_log: where answered predict calls are offered for logging (None: nowhere).
    """

    def __init__(
        self,
        manager: ModelManager,
        host: str,
        port: int,
        max_request_bytes: int,
        *,
        on_reload: Callable[[list[ModelConfig]], None] | None = None,
        max_threads: int = 64,
        metrics: ServingMetrics | None = None,
        request_log: RequestLogger | None = None,
    ):
        self._manager = manager
        self._request_log = request_log
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._options = [
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),
            # Without this a second server could bind the same port and steal half the calls.
            ("grpc.so_reuseport", 0),
        ]
        self._on_reload = on_reload or manager.apply_configs
        self._max_threads = max_threads
        self._metrics = metrics
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: grpc.aio.Server | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.port = 0

    def start(self) -> None:
        """Binds and starts serving.

        Raises:
            OSError: when the address cannot be bound.
        """
        self._pool = concurrent.futures.ThreadPoolExecutor(
            self._max_threads, thread_name_prefix="grpc"
        )
        self._loop = asyncio.new_event_loop()
        bound: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=self._run_loop, args=(bound,), name="grpc-loop", daemon=True
        )
        self._thread.start()
        try:
            self.port = bound.result()
        except BaseException:
            self._thread.join()
            self._close()
            raise

    def _run_loop(self, bound: concurrent.futures.Future) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._bind(bound))
        if self._server is not None:
            self._loop.run_forever()

    async def _bind(self, bound: concurrent.futures.Future) -> None:
        server = grpc.aio.server(options=self._options)
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            PredictionService(self._manager, self._pool, self._metrics, self._request_log),
            server,
        )
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            ModelService(self._manager, self._pool, self._on_reload), server
        )
        try:
            port = server.add_insecure_port(self._address)
        except RuntimeError:
            # grpc says only "Failed to bind"; the usual cause is a port already taken.
            port = 0
        if not port:
            bound.set_exception(OSError("address already in use or not available"))
            return
        await server.start()
        self._server = server
        bound.set_result(port)

    def stop(self, grace: float = 10.0) -> None:
        """Refuses new calls, lets calls in flight finish (up to `grace` s), then stops."""
        loop, server, thread = self._loop, self._server, self._thread
        if server is None or loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(server.stop(grace), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._server = None
        self._close()

    def _close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None
