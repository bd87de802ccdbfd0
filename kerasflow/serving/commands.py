"""The `serve` and `predict` subcommands, registered into the project's CLI.

`serve` takes tensorflow_model_server's flag names, so a command line written for TF Serving
runs here unchanged. Heavy imports wait until a handler runs, so the CLI itself starts quickly.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from pathlib import Path

from kerasflow.constants import CLASSIFY_SIGNATURE
from kerasflow.constants import SERVING_SIGNATURE as DEFAULT_SIGNATURE
from kerasflow.runtime.errors import UserError
from kerasflow.runtime.fileio import is_gcs

DEFAULT_REST_URL = "http://127.0.0.1:8501"


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0..65535: {value}")
    return value


def _non_negative(kind):
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


def register(subparsers) -> None:
    """Adds `serve` and `predict` to an argparse subparsers object.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    from kerasflow.serving.server import DEFAULT_MAX_REQUEST_BYTES

    serve = subparsers.add_parser(
        "serve",
        help="serve model versions over TF Serving's gRPC and REST APIs",
        description="Serve SavedModel versions with TF Serving's gRPC and REST APIs. Flags "
        "follow tensorflow_model_server.",
    )
    serve.add_argument("--port", type=_port, default=8500, help="gRPC port (default 8500)")
    serve.add_argument(
        "--rest_api_port", type=_port, default=8501, help="REST port (default 8501; 0 disables)"
    )
    serve.add_argument("--model_name", default="default", help="name of the single model")
    serve.add_argument("--model_base_path", help="folder (or gs:// prefix) of version folders")
    serve.add_argument("--model_config_file", help="ModelServerConfig in protobuf text format")
    serve.add_argument(
        "--model_config_file_poll_wait_seconds",
        type=_non_negative(float),
        default=0.0,
        help="re-read --model_config_file this often (0: never)",
    )
    serve.add_argument(
        "--file_system_poll_wait_seconds",
        type=_non_negative(float),
        default=1.0,
        help="seconds between polls for new versions (0: load once)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument(
        "--enable_batching",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        help="merge concurrent requests (default true)",
    )
    serve.add_argument(
        "--max_batch_size",
        type=_non_negative(int),
        default=32,
        help="most rows in one merged model call (default 32; 1 disables batching)",
    )
    serve.add_argument(
        "--batch_timeout_micros",
        type=_non_negative(int),
        default=0,
        help="how long a batch may wait for more requests (default 0: never wait)",
    )
    serve.add_argument(
        "--max_request_bytes",
        type=_non_negative(int),
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"largest request body or message (default {DEFAULT_MAX_REQUEST_BYTES})",
    )
    serve.add_argument(
        "--grpc_max_threads",
        type=_non_negative(int),
        default=64,
        help="gRPC calls served at once (default 64)",
    )
    serve.set_defaults(func=run_serve)

    predict = subparsers.add_parser(
        "predict",
        help="send images, texts or rows to a served model and print its predictions",
        description="Read --input (image files or a folder of them for an image model; a .txt "
        "file or a folder of them for a text model; rows in CSV, JSON or Parquet for any model), "
        "shape it as the model's signature asks, send one predict request over REST or gRPC and "
        "print class names and probabilities (the classify signature, when the model has one) "
        "or values, as a table or --json.",
    )
    predict.add_argument("--model-name", required=True, help="served model name")
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC address of the server")
    target.add_argument(
        "--rest", metavar="URL", help=f"REST base URL of the server (default {DEFAULT_REST_URL})"
    )
    predict.add_argument(
        "--input",
        required=True,
        help="an image, a .txt file, a folder of either, or rows.csv / rows.json / rows.parquet",
    )
    predict.add_argument(
        "--version", type=_non_negative(int), help="model version (default: latest)"
    )
    predict.add_argument(
        "--signature-name",
        default=None,
        help="signature (default: classify when the model has it, else serving_default)",
    )
    predict.add_argument(
        "--json", action="store_true", help="print one JSON document instead of a table"
    )
    predict.set_defaults(func=run_predict)


def server_options_from_args(args: argparse.Namespace):
    """ServerOptions from parsed `serve` flags.

    Raises:
        UserError: for contradictory or missing flags and unreadable config files.
    """
    from kerasflow.serving.batching import BatchingOptions
    from kerasflow.serving.config import ModelConfig, load_model_config_file
    from kerasflow.serving.server import ServerOptions

    if args.model_config_file and args.model_base_path:
        raise UserError("give either --model_config_file or --model_base_path, not both")
    if args.model_config_file:
        models = load_model_config_file(args.model_config_file)
    elif args.model_base_path:
        base = args.model_base_path
        if not is_gcs(base) and not Path(base).is_dir():
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
    batch = args.max_batch_size if args.enable_batching else 1
    return ServerOptions(
        models=models,
        host=args.host,
        grpc_port=args.port,
        rest_port=args.rest_api_port or None,
        poll_seconds=args.file_system_poll_wait_seconds,
        batching=BatchingOptions(batch, args.batch_timeout_micros),
        max_request_bytes=args.max_request_bytes,
        config_file=args.model_config_file,
        config_poll_seconds=args.model_config_file_poll_wait_seconds,
        grpc_max_threads=args.grpc_max_threads,
    )


def run_serve(args: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT, then stops cleanly and returns 0."""
    import logging

    from kerasflow.runtime.quiet_tf import import_tensorflow_quietly

    import_tensorflow_quietly()
    from kerasflow.serving.server import ModelServer

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    options = server_options_from_args(args)
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = ModelServer(options).start()
        try:
            rest = server.rest_url or "off"
            print(
                f"kerasflow serve: ready; gRPC on {server.grpc_target}, REST on {rest}; "
                f"models: {', '.join(server.manager.model_names())}",
                flush=True,
            )
            # A timed wait lets the signal handler run promptly in the main thread.
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("kerasflow serve: stopped", flush=True)
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Sends --input to the server and prints the predictions as a table or JSON."""
    from kerasflow.serving import answers
    from kerasflow.serving.client import GrpcClient, RestClient
    from kerasflow.serving.inputs import read_batch

    if args.grpc:
        from kerasflow.runtime.quiet_tf import import_tensorflow_quietly

        import_tensorflow_quietly()  # the gRPC protos import TensorFlow
        client = GrpcClient(args.grpc)
    else:
        url = args.rest or DEFAULT_REST_URL
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--rest wants an http:// or https:// URL, got {url!r}")
        client = RestClient(url)
    signature = args.signature_name or DEFAULT_SIGNATURE
    specs = client.input_specs(args.model_name, args.version, signature)
    if args.signature_name is None:
        try:
            named = client.input_specs(args.model_name, args.version, CLASSIFY_SIGNATURE)
        except UserError:  # no classify signature: regression, or a model exported elsewhere
            named = None
        if named == specs:
            signature = CLASSIFY_SIGNATURE
    batch = read_batch(args.input, specs)
    predictions = client.predict(args.model_name, args.version, signature, batch.inputs)
    classified = answers.is_classify(signature)
    if args.json:
        json.dump(answers.json_document(predictions, batch.names, classified), sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(answers.render_table(predictions, batch.names, classified))
    return 0
