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

from kerasflow.constants import CLASSIFY_SIGNATURE
from kerasflow.constants import SERVING_SIGNATURE as DEFAULT_SIGNATURE
from kerasflow.runtime.errors import UserError
from kerasflow.serving import flags
from kerasflow.serving.flags import non_negative

DEFAULT_REST_URL = "http://127.0.0.1:8501"


def register(subparsers) -> None:
    """Adds `serve` and `predict` to an argparse subparsers object.

    Args:
        subparsers: what `ArgumentParser.add_subparsers()` returned.
    """
    serve = subparsers.add_parser(
        "serve",
        help="serve model versions over TF Serving's gRPC and REST APIs",
        description="Serve SavedModel versions with TF Serving's gRPC and REST APIs. Flags "
        "follow tensorflow_model_server.",
    )
    flags.add_serve_flags(serve)
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
        "--version", type=non_negative(int), help="model version (default: latest)"
    )
    predict.add_argument(
        "--signature-name",
        default=None,
        help="signature (default: classify when the model has it, else serving_default)",
    )
    predict.add_argument(
        "--column",
        default="",
        help="with a table --input: the column holding the texts (text model) or image file "
        "paths relative to the table (image model)",
    )
    predict.add_argument(
        "--json", action="store_true", help="print one JSON document instead of a table"
    )
    predict.set_defaults(func=run_predict)


def run_serve(args: argparse.Namespace) -> int:
    """Serves until SIGTERM or SIGINT, then stops cleanly and returns 0."""
    import logging

    from kerasflow.runtime.quiet_tf import import_tensorflow_quietly

    import_tensorflow_quietly()
    from kerasflow.serving.server import ModelServer

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.version:
        print(flags.version_line(), flush=True)
        return 0
    options = flags.server_options_from_args(args)
    ignored = flags.no_effect_flags_given(args)
    if ignored:
        logging.getLogger("kerasflow.serving").warning(
            "accepted with no effect here (TF Serving runtime flags): %s", ", ".join(ignored)
        )
    stop = threading.Event()

    def on_signal(signum, frame) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        server = ModelServer(options).start()
        try:
            rest = server.rest_url or "off (--rest_api_port not given)"
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
    batch = read_batch(args.input, specs, args.column)
    predictions = client.predict(args.model_name, args.version, signature, batch.inputs)
    classified = answers.is_classify(signature)
    if args.json:
        json.dump(answers.json_document(predictions, batch.names, classified), sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(answers.render_table(predictions, batch.names, classified))
    return 0
