"""The model server: a model manager with a gRPC and a REST frontend.

`ModelServer` is what `kerasflow serve` runs and what tests start in-process:

    with ModelServer(ServerOptions(models=[ModelConfig("digits", "/models/digits")],
                                   grpc_port=0, rest_port=0)) as server:
        requests.get(f"{server.rest_url}/v1/models/digits")
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading

from kerasflow.runtime.errors import UserError
from kerasflow.serving.batching import BatchingOptions
from kerasflow.serving.config import ModelConfig, load_model_config_file
from kerasflow.serving.manager import ModelManager
from kerasflow.serving.metrics import ServingMetrics
from kerasflow.serving.request_logger import RequestLogger, RequestLogOptions
from kerasflow.serving.servable import load_servable

log = logging.getLogger(__name__)

DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_MAX_REQUEST_BYTES = 64 << 20


@dataclasses.dataclass
class ServerOptions:
    """How to run a ModelServer.

    Attributes:
        models: the models to serve.
        host: the address both frontends bind (loopback unless told otherwise).
        grpc_port: gRPC port; 0 picks a free one.
        rest_port: REST port; 0 picks a free one, None turns REST off.
        poll_seconds: seconds between filesystem polls for new versions (<= 0: load once).
        batching: server-side batching (max_batch_size <= 1 turns it off).
        max_request_bytes: larger REST bodies get 413, larger gRPC messages RESOURCE_EXHAUSTED.
        config_file: a model config file to re-read every `config_poll_seconds` (> 0).
        config_poll_seconds: seconds between re-reads of `config_file`.
        grace_seconds: how long shutdown waits for requests in flight.
        grpc_max_threads: gRPC calls served at once (each waits on the batcher in its thread).
        warmup: replay a version's warmup requests before it serves.
        rest_timeout_seconds: REST predict calls that take longer answer 504 (<= 0: no limit).
        allow_labels_for_unavailable: a config may give a new label to a version not loaded.
        prometheus_path: REST path of the Prometheus metrics (None: no metrics endpoint).
        request_log: where sampled predict requests are logged (None: not logged).
    """

    models: list[ModelConfig]
    host: str = "127.0.0.1"
    grpc_port: int = DEFAULT_GRPC_PORT
    rest_port: int | None = DEFAULT_REST_PORT
    poll_seconds: float = 1.0
    batching: BatchingOptions = dataclasses.field(default_factory=BatchingOptions)
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    config_file: str | None = None
    config_poll_seconds: float = 0.0
    grace_seconds: float = 10.0
    grpc_max_threads: int = 64
    warmup: bool = True
    rest_timeout_seconds: float = 30.0
    allow_labels_for_unavailable: bool = False
    prometheus_path: str | None = None
    request_log: RequestLogOptions | None = None


class ModelServer:
    """Loads the models, then serves them over gRPC and REST until stopped.

    Args:
        options: what to serve and where.
    """

    def __init__(self, options: ServerOptions):
        self.options = options
        self.manager = ModelManager(
            options.models,
            poll_seconds=options.poll_seconds,
            batching=options.batching,
            loader=functools.partial(load_servable, warmup=options.warmup),
        )
        self.metrics = ServingMetrics(self.manager)
        self._grpc = None
        self._rest = None
        self.request_log: RequestLogger | None = None
        if options.request_log is not None:
            self.request_log = RequestLogger(
                options.request_log,
                on_drop=self.metrics.count_log_dropped,
                on_write=self.metrics.count_logged,
            )
        self._stop_config_poll = threading.Event()
        self._config_thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def grpc_port(self) -> int:
        """The bound gRPC port."""
        return self._grpc.port if self._grpc else 0

    @property
    def rest_port(self) -> int | None:
        """The bound REST port (None when REST is off)."""
        return self._rest.port if self._rest else None

    @property
    def grpc_target(self) -> str:
        """host:port for grpc.insecure_channel."""
        return f"{self._client_host()}:{self.grpc_port}"

    @property
    def rest_url(self) -> str | None:
        """http://host:port of the REST API (None when REST is off)."""
        if self._rest is None:
            return None
        return f"http://{self._client_host()}:{self.rest_port}"

    def _client_host(self) -> str:
        host = self.options.host
        if host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host

    def start(self) -> ModelServer:
        """Loads the models (as TF Serving does, before opening ports), then binds both ports.

        Raises:
            UserError: when a port cannot be bound.
        """
        from kerasflow.serving.grpc_service import GrpcServer
        from kerasflow.serving.rest import RestServer

        opts = self.options
        self.manager.start()
        try:
            if self.request_log is not None:
                self.request_log.start()
            self.check_labels(opts.models, previous=[])
            self._grpc = GrpcServer(
                self.manager,
                opts.host,
                opts.grpc_port,
                opts.max_request_bytes,
                on_reload=self.apply_configs,
                max_threads=opts.grpc_max_threads,
                metrics=self.metrics,
                request_log=self.request_log,
            )
            self._start_frontend(self._grpc, "gRPC", opts.grpc_port)
            if opts.rest_port is not None:
                self._rest = RestServer(
                    self.manager,
                    opts.host,
                    opts.rest_port,
                    opts.max_request_bytes,
                    metrics=self.metrics,
                    metrics_path=opts.prometheus_path,
                    timeout_seconds=opts.rest_timeout_seconds,
                    request_log=self.request_log,
                )
                self._start_frontend(self._rest, "REST", opts.rest_port)
        except BaseException:
            self.stop()
            raise
        if opts.config_file and opts.config_poll_seconds > 0:
            self._config_thread = threading.Thread(
                target=self._poll_config, name="config-poll", daemon=True
            )
            self._config_thread.start()
        return self

    def _start_frontend(self, frontend, kind: str, port: int) -> None:
        try:
            frontend.start()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UserError(
                f"cannot open the {kind} port {port} on {self.options.host}: {reason}"
            ) from None

    def _poll_config(self) -> None:
        while not self._stop_config_poll.wait(self.options.config_poll_seconds):
            try:
                configs = load_model_config_file(self.options.config_file)
            except UserError as exc:
                log.error("keeping the current models: %s", exc)
                continue
            if configs != self.manager.configs:
                log.info("model config changed; applying %s", self.options.config_file)
                try:
                    self.apply_configs(configs)
                except UserError as exc:
                    log.error("keeping the current models: %s", exc)

    def apply_configs(self, configs: list[ModelConfig]) -> None:
        """Serves `configs` from now on, once their version labels pass check_labels.

        Raises:
            UserError: when a label names a version that is not available (the current models
                stay as they are).
        """
        self.check_labels(configs, previous=self.manager.configs)
        self.manager.apply_configs(configs)

    def check_labels(self, configs: list[ModelConfig], previous: list[ModelConfig]) -> None:
        """Refuses labels on versions that are not available, as TF Serving does.

        With `allow_labels_for_unavailable` (`--allow_version_labels_for_unavailable_models`) a
        label that a model does not have yet may name a version still to be loaded; a label
        that exists is only ever moved to an available version.

        Raises:
            UserError: naming the model, the label and the version.
        """
        before = {c.name: dict(c.labels) for c in previous}
        for config in configs:
            for label, version in config.labels.items():
                if self._available(config.name, version):
                    continue
                is_new = label not in before.get(config.name, {})
                if self.options.allow_labels_for_unavailable and is_new:
                    continue
                raise UserError(
                    f"label '{label}' of model {config.name} names version {version}, which is "
                    "not currently available for inference"
                    + ("" if is_new else " (an existing label only moves to a loaded version)")
                )

    def _available(self, name: str, version: int) -> bool:
        try:
            (status,) = self.manager.model_status(name, version)
        except Exception:  # no such model or version yet
            return False
        return status.state == "AVAILABLE"

    def stop(self, grace: float | None = None) -> None:
        """Stops accepting, finishes requests in flight, unloads the models. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.options.grace_seconds if grace is None else grace
        self._stop_config_poll.set()
        frontends = [f for f in (self._rest, self._grpc) if f is not None]
        threads = [threading.Thread(target=f.stop, args=(grace,)) for f in frontends]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self._config_thread is not None:
            self._config_thread.join()
        if self.request_log is not None:
            self.request_log.close()  # after the frontends: requests in flight get logged
        self.manager.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Blocks until stop() was called (or `timeout` passed); returns True once stopped."""
        return self._stopped.wait(timeout)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
