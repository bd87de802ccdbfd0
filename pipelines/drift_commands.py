"""`kerasflow drift`: do new data or logged requests differ from the champion's training data?

Exit codes follow `diff`: 0 when nothing drifted, 1 when something did, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from kerasflow import constants as C
from kerasflow.pipelines.command_args import store_arguments
from kerasflow.runtime import fileio

KIND_DRIFT = "drift"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `drift` subcommand."""
    from kerasflow.settings import DriftSettings
    from kerasflow.settings.base import choices_of
    from kerasflow.settings.cli import flag_name

    parser = subparsers.add_parser(
        "drift",
        help="test new data or logged requests for drift from the champion's training data",
        description="Compares new data (--data) or the requests `kerasflow serve` logged "
        "(--requests) with the training data of the registry's champion of --model-name: a "
        "Kolmogorov-Smirnov test and PSI per number, chi-squared per category, per-image "
        "statistics for images, out-of-vocabulary share for text, and the label's shift when "
        "the data have labels, corrected for testing many features. Writes an HTML report, "
        "records a drift run in MLflow and exits 0 (no drift), 1 (drift) or 2 (bad input).",
    )
    parser.add_argument("--model-name", required=True, help="the served model's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", metavar="URI", help="new data, as `kerasflow run --data` reads")
    source.add_argument(
        "--requests",
        metavar="LOG_URI",
        help="a request log folder (local, gs://, s3://) with one subfolder per model",
    )
    parser.add_argument(
        "--max-requests", type=int, default=100_000, metavar="N", help="oldest N logged requests"
    )
    parser.add_argument("--experiment", default=C.DEFAULT_EXPERIMENT, help="MLflow experiment")
    store_arguments(parser)
    parser.add_argument(
        "--report", default="", metavar="PATH", help="HTML report (default WORK_DIR/drift/...)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    tests = parser.add_argument_group("drift tests", DriftSettings.__doc__)
    for key, field in DriftSettings.model_fields.items():
        allowed = choices_of(DriftSettings, key)
        text = f"{field.description} (default {field.default})"
        if allowed:
            tests.add_argument(flag_name(key), choices=allowed, default=None, help=text)
        else:
            tests.add_argument(flag_name(key), type=float, default=None, help=text)
    parser.set_defaults(func=cmd_drift)


def cmd_drift(args: argparse.Namespace) -> int:
    """Runs the drift tests, writes the report, records the drift run; 1 when drifted."""
    import mlflow

    from kerasflow.monitoring import check, report
    from kerasflow.runtime.errors import UserError
    from kerasflow.settings import DriftSettings, resolve_tracking_uri
    from kerasflow.tracking import runs

    if args.max_requests < 1:
        raise UserError(f"--max-requests must be at least 1, got {args.max_requests}")
    given = {k: getattr(args, k) for k in DriftSettings.model_fields}
    options = check.options_of({k: v for k, v in given.items() if v is not None})
    uri = resolve_tracking_uri(args.tracking_uri, args.work_dir)
    result, facts = check.check_champion(
        uri,
        args.model_name,
        data=args.data or "",
        requests=args.requests or "",
        options=options,
        max_requests=args.max_requests,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = args.report or str(Path(args.work_dir, "drift", f"{args.model_name}-{stamp}.html"))
    exp_id = runs.configure(uri, args.experiment)
    title = f"Drift of {result.source} from {args.model_name} v{facts['registry_version']}"
    with mlflow.start_run(
        experiment_id=exp_id,
        run_name=f"drift-{args.model_name}",
        tags={C.TAG_KIND: KIND_DRIFT, "kerasflow.model_name": args.model_name},
    ) as run:
        mlflow.log_params({"source": args.data or args.requests, **given})
        page = check.log_to_active_run(result, facts, title)
    if not fileio.is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    fileio.write_bytes_atomic(path, page.encode())
    if args.json:
        document = {**result.as_dict(), "champion": facts, "report": path}
        print(json.dumps({**document, "mlflow_run_id": run.info.run_id}, indent=1))
    else:
        print(report.table(result))
        print(f"report: {path}")
        print(f"MLflow: drift run {run.info.run_id} in experiment '{args.experiment}'")
    return 1 if result.drifted else 0
