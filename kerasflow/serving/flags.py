"""`kerasflow serve`'s flags: every flag of tensorflow_model_server 2.21, with its defaults.

A command line written for TF Serving (the k8s Deployment's args, a Dockerfile's CMD) runs here
unchanged. The flags that change what a server does behave as TF Serving's do: REST stays off
unless `--rest_api_port` is given, batching stays off unless `--enable_batching`, and is tuned by
`--batching_parameters_file` in BatchingParameters' text format. Flags about TF Serving's own
runtime (thread pools, TPUs, TFLite, XLA, SSL) are accepted, and named in one warning line when
given, because this server has no such knob. `--host`, `--max_request_bytes` and the
`--request_log_*` flags are this server's own.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import check_uri, is_remote

log = logging.getLogger(__name__)

TF_SERVING_VERSION = "2.21"
# TF Serving's BatchingParameters defaults (BasicBatchScheduler's QueueOptions).
DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_BATCH_TIMEOUT_MICROS = 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0..65535: {value}")
    return value


def non_negative(kind):
    """An argparse type converting with `kind` and refusing negative values."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative: {text}")
        return value

    return parse


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


# TF Serving flags that have no counterpart in this server: accepted with TF Serving's types
# and named in a warning when given. (name, type)
NO_EFFECT_FLAGS: tuple[tuple[str, object], ...] = (
    ("grpc_socket_path", str),
    ("rest_api_num_threads", _int),
    ("rest_api_enable_cors_support", _bool),
    ("enable_per_model_batching_parameters", _bool),
    ("num_load_threads", _int),
    ("num_unload_threads", _int),
    ("max_num_load_retries", _int),
    ("load_retry_interval_micros", _int),
    ("flush_filesystem_caches", _bool),
    ("tensorflow_session_parallelism", _int),
    ("tensorflow_session_config_file", str),
    ("tensorflow_intra_op_parallelism", _int),
    ("tensorflow_inter_op_parallelism", _int),
    ("use_alts_credentials", _bool),
    ("ssl_config_file", str),
    ("platform_config_file", str),
    ("per_process_gpu_memory_fraction", _float),
    ("saved_model_tags", str),
    ("grpc_channel_arguments", str),
    ("num_request_iterations_for_warmup", _int),
    ("remove_unused_fields_from_bundle_metagraph", _bool),
    ("prefer_tflite_model", _bool),
    ("num_tflite_pools", _int),
    ("num_tflite_interpreters_per_pool", _int),
    ("enable_signature_method_name_check", _bool),
    ("xla_cpu_compilation_enabled", _bool),
    ("xla_gpu_compilation_enabled", _bool),
    ("enable_profiler", _bool),
    ("thread_pool_factory_config_file", str),
    ("mixed_precision", str),
    ("skip_initialize_tpu", _bool),
    ("enable_grpc_healthcheck_service", _bool),
    ("enable_serialization_as_tensor_content", _bool),
)


def _flag(parser: argparse.ArgumentParser, name: str, kind, default, text: str) -> None:
    if kind is _bool:
        # TF Serving's booleans: `--name`, `--name=true`, `--name=false`.
        parser.add_argument(
            f"--{name}", type=_bool, nargs="?", const=True, default=default, help=text
        )
    else:
        parser.add_argument(f"--{name}", type=kind, default=default, help=text)


def add_serve_flags(serve: argparse.ArgumentParser) -> None:
    """Adds tensorflow_model_server's flags (and this server's own two) to `serve`."""
    from kerasflow.serving.server import DEFAULT_MAX_REQUEST_BYTES

    nn_int, nn_float = non_negative(int), non_negative(float)
    _flag(serve, "port", _port, 8500, "gRPC port (default 8500)")
    _flag(serve, "rest_api_port", _port, 0, "REST port (default 0: no REST API)")
    _flag(
        serve,
        "rest_api_timeout_in_ms",
        nn_int,
        30000,
        "REST predict calls that take longer answer 504 (default 30000; 0: no limit)",
    )
    _flag(serve, "model_name", str, "default", "name of the single model (default 'default')")
    _flag(serve, "model_base_path", str, None, "folder (or gs:// / s3:// prefix) of versions")
    _flag(serve, "model_config_file", str, None, "ModelServerConfig in protobuf text format")
    _flag(
        serve,
        "model_config_file_poll_wait_seconds",
        nn_float,
        0.0,
        "re-read --model_config_file this often (default 0: never)",
    )
    _flag(
        serve,
        "file_system_poll_wait_seconds",
        nn_float,
        1.0,
        "seconds between polls for new versions (default 1; 0: load once)",
    )
    _flag(serve, "enable_batching", _bool, False, "merge concurrent requests (default false)")
    _flag(
        serve,
        "batching_parameters_file",
        str,
        None,
        "BatchingParameters in protobuf text format (needs --enable_batching)",
    )
    _flag(
        serve,
        "allow_version_labels_for_unavailable_models",
        _bool,
        False,
        "let a config give a new label to a version that is not loaded yet (default false)",
    )
    _flag(
        serve,
        "enable_model_warmup",
        _bool,
        True,
        "replay assets.extra/tf_serving_warmup_requests before a version serves (default true)",
    )
    _flag(
        serve,
        "monitoring_config_file",
        str,
        None,
        "MonitoringConfig in protobuf text format (Prometheus metrics on the REST port)",
    )
    _flag(serve, "grpc_max_threads", nn_int, 64, "gRPC calls served at once (default 64)")
    serve.add_argument("--version", action="store_true", help="print the version and exit")
    for name, kind in NO_EFFECT_FLAGS:
        _flag(serve, name, kind, None, "accepted for TF Serving compatibility; no effect here")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--max_request_bytes",
        type=nn_int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest request body or message (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    add_request_log_flags(serve)


def add_request_log_flags(serve: argparse.ArgumentParser) -> None:
    """This server's request log flags (TF Serving has no request log of its own)."""
    from kerasflow.serving import request_logger as rl

    serve.add_argument(
        "--request_log_uri",
        default=None,
        metavar="PREFIX",
        help="log sampled predict requests and answers under PREFIX/<model>/ as JSON lines "
        "(a folder, gs:// or s3://; default: no log)",
    )
    serve.add_argument(
        "--request_log_sampling",
        type=_fraction,
        default=1.0,
        help="fraction of predict requests logged, 0..1 (default 1)",
    )
    serve.add_argument(
        "--request_log_max_bytes",
        type=non_negative(int),
        default=rl.DEFAULT_MAX_BYTES,
        help=f"start a new log file after this many bytes (default {rl.DEFAULT_MAX_BYTES})",
    )
    serve.add_argument(
        "--request_log_max_seconds",
        type=non_negative(float),
        default=rl.DEFAULT_MAX_SECONDS,
        help="start a new log file after this many seconds, so object stores see records "
        f"(default {rl.DEFAULT_MAX_SECONDS:g})",
    )


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def request_log_from_args(args: argparse.Namespace):
    """RequestLogOptions from the `--request_log_*` flags (None when no log is asked for).

    Raises:
        UserError: for a bad URI or a zero size or age limit.
    """
    from kerasflow.serving.request_logger import RequestLogOptions

    uri = getattr(args, "request_log_uri", None)
    if not uri:
        return None
    check_uri(uri)
    if args.request_log_max_bytes < 1 or args.request_log_max_seconds <= 0:
        raise UserError("--request_log_max_bytes and --request_log_max_seconds must be above 0")
    return RequestLogOptions(
        uri=uri,
        sampling=args.request_log_sampling,
        max_bytes=args.request_log_max_bytes,
        max_seconds=args.request_log_max_seconds,
    )


def no_effect_flags_given(args: argparse.Namespace) -> list[str]:
    """The TF-Serving-only flags a command line set."""
    return [f"--{name}" for name, _ in NO_EFFECT_FLAGS if getattr(args, name, None) is not None]


def batching_from_args(args: argparse.Namespace):
    """BatchingOptions from `--enable_batching` and `--batching_parameters_file`.

    Raises:
        UserError: for a parameters file without --enable_batching (TF Serving refuses it too),
            an unreadable or invalid file, or allowed_batch_sizes that do not end at
            max_batch_size.
    """
    from kerasflow.serving.batching import BatchingOptions
    from kerasflow.serving.protos import read_text_proto

    path = args.batching_parameters_file
    if not args.enable_batching:
        if path:
            raise UserError("--batching_parameters_file is set without --enable_batching")
        return BatchingOptions(max_batch_size=1)
    if not path:
        return BatchingOptions(DEFAULT_MAX_BATCH_SIZE, DEFAULT_BATCH_TIMEOUT_MICROS)
    params = read_text_proto("BatchingParameters", path, "--batching_parameters_file")
    size = params.max_batch_size.value if params.HasField("max_batch_size") else None
    size = DEFAULT_MAX_BATCH_SIZE if size is None else size
    timeout = (
        params.batch_timeout_micros.value
        if params.HasField("batch_timeout_micros")
        else DEFAULT_BATCH_TIMEOUT_MICROS
    )
    if size < 1 or timeout < 0:
        raise UserError(
            f"--batching_parameters_file {path}: max_batch_size must be >= 1 and "
            "batch_timeout_micros >= 0"
        )
    allowed = list(params.allowed_batch_sizes)
    if allowed and allowed[-1] != size:
        raise UserError(
            f"--batching_parameters_file {path}: the last entry of allowed_batch_sizes must "
            f"match max_batch_size; it was {allowed[-1]}, expected {size}"
        )
    return BatchingOptions(size, timeout)


def prometheus_path_from_args(args: argparse.Namespace) -> str | None:
    """The metrics path a `--monitoring_config_file` enables (None: no metrics endpoint)."""
    from kerasflow.serving.metrics import DEFAULT_PATH
    from kerasflow.serving.protos import read_text_proto

    if not args.monitoring_config_file:
        return None
    config = read_text_proto(
        "MonitoringConfig", args.monitoring_config_file, "--monitoring_config_file"
    )
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    path = prometheus.path or DEFAULT_PATH
    if not path.startswith("/"):
        raise UserError(
            f"--monitoring_config_file: prometheus_config.path must start with /: {path}"
        )
    return path


def server_options_from_args(args: argparse.Namespace):
    """ServerOptions from parsed `serve` flags.

    Raises:
        UserError: for contradictory or missing flags and unreadable config files.
    """
    from kerasflow.serving.config import ModelConfig, load_model_config_file
    from kerasflow.serving.server import ServerOptions

    if args.model_config_file and args.model_base_path:
        raise UserError("give either --model_config_file or --model_base_path, not both")
    if args.model_config_file:
        models = load_model_config_file(args.model_config_file)
    elif args.model_base_path:
        base = args.model_base_path
        check_uri(base)
        if not is_remote(base) and not Path(base).is_dir():
            raise UserError(f"--model_base_path {base} is not a folder")
        models = [ModelConfig(name=args.model_name, base_path=base)]
    else:
        raise UserError("give --model_base_path (with --model_name) or --model_config_file")
    if args.rest_api_port and args.rest_api_port == args.port:
        raise UserError(f"--port and --rest_api_port are both {args.port}; give two ports")
    if args.max_request_bytes < 1:
        raise UserError("--max_request_bytes must be at least 1")
    if args.grpc_max_threads < 1:
        raise UserError("--grpc_max_threads must be at least 1")
    prometheus_path = prometheus_path_from_args(args)
    if prometheus_path and not args.rest_api_port:
        # TF Serving exposes the metrics on the REST port only.
        raise UserError(
            "--monitoring_config_file enables Prometheus metrics, which need --rest_api_port"
        )
    return ServerOptions(
        models=models,
        host=args.host,
        grpc_port=args.port,
        rest_port=args.rest_api_port or None,
        poll_seconds=args.file_system_poll_wait_seconds,
        batching=batching_from_args(args),
        max_request_bytes=args.max_request_bytes,
        config_file=args.model_config_file,
        config_poll_seconds=args.model_config_file_poll_wait_seconds,
        grpc_max_threads=args.grpc_max_threads,
        warmup=args.enable_model_warmup,
        rest_timeout_seconds=args.rest_api_timeout_in_ms / 1000.0,
        allow_labels_for_unavailable=args.allow_version_labels_for_unavailable_models,
        prometheus_path=prometheus_path,
        request_log=request_log_from_args(args),
    )


def version_line() -> str:
    """What `--version` prints."""
    from importlib.metadata import version

    release = version("kerasflow")
    return f"kerasflow serve {release} (tensorflow_model_server {TF_SERVING_VERSION} flags)"
