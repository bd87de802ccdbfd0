"""`kerasflow lineage` (where a served model came from, or what was trained on some data),
`kerasflow reproduce` (rerun a pipeline run and compare) and `kerasflow gc` (retention)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys

from kerasflow.pipelines.command_args import serving_dir_argument, store_arguments
from kerasflow.runtime.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `lineage`, `reproduce` and `gc` subcommands."""
    lineage = subparsers.add_parser(
        "lineage",
        help="trace a served model back to its runs, data and code (or data to its models)",
        description="With --model-name: the chain from a serving version to its registry "
        "version, MLflow runs, KFP run, data (source, digest, schema), code (kerasflow "
        "version, git commit, image), hyperparameters and augmentation. With --data-digest: "
        "the model versions and pipeline runs trained on those data.",
    )
    lineage.add_argument("--model-name", default="", help="the served model's name")
    lineage.add_argument(
        "--version",
        type=int,
        default=None,
        metavar="N",
        help="serving version (default: the champion's)",
    )
    lineage.add_argument(
        "--data-digest", default="", help="list what was trained on data of this digest"
    )
    lineage.add_argument("--json", action="store_true", help="print one JSON document")
    serving_dir_argument(lineage)
    store_arguments(lineage)
    lineage.set_defaults(func=cmd_lineage)

    again = subparsers.add_parser(
        "reproduce",
        help="rerun a pipeline run's recorded settings on the same data and compare metrics",
        description="Reruns the pipeline run RUN_ID (its MLflow run id) with the settings it "
        "recorded, after checking that its data still have the recorded digest. By default the "
        "final fit trains on the run's best hyperparameters with the same seed and TensorFlow "
        "op determinism; --with-search repeats the search too. The rerun is evaluated but not "
        "deployed unless --deploy is given. Prints each test metric against the original.",
    )
    again.add_argument("run_id", metavar="RUN_ID", help="the pipeline run's MLflow run id")
    again.add_argument(
        "--with-search", action="store_true", help="repeat the hyperparameter search as well"
    )
    again.add_argument(
        "--deploy",
        action="store_true",
        help="let a blessed reproduction be deployed and become champion (default: never)",
    )
    again.add_argument(
        "--tolerance",
        type=float,
        default=0.005,
        metavar="X",
        help="largest difference of a test metric that counts as reproduced (default 0.005); "
        "beyond it the command exits 1",
    )
    again.add_argument("--json", action="store_true", help="print one JSON document")
    again.add_argument("--verbose", "-v", action="store_true", help="show every step's log")
    store_arguments(again)
    again.set_defaults(func=cmd_reproduce)

    gc = subparsers.add_parser(
        "gc",
        help="delete old serving/registry versions, request logs and work folders",
        description="Keeps the newest --keep serving versions of each model (and the registry "
        "versions published as them) plus the champion, every version models.config serves "
        "or labels and a version a deploy in progress has claimed; request log files younger "
        "than --log-days; the newest --keep pipeline roots, tuner directories, run logs and "
        "reproductions in WORK_DIR and whatever a running pipeline may use. Deletes the rest "
        "and prints what went and what was kept and why.",
    )
    gc.add_argument("--keep", type=int, default=3, metavar="N", help="versions to keep (3)")
    gc.add_argument(
        "--log-days",
        type=float,
        default=None,
        metavar="D",
        help="delete request log files older than D days (needs --request-log)",
    )
    gc.add_argument(
        "--request-log",
        default="",
        metavar="URI",
        help="the request log prefix (local, gs://, s3://)",
    )
    gc.add_argument("--model-name", default="", help="only this model (default: every model)")
    gc.add_argument("--dry-run", action="store_true", help="list what would go; delete nothing")
    gc.add_argument("--json", action="store_true", help="print one JSON document")
    serving_dir_argument(gc)
    store_arguments(gc)
    gc.set_defaults(func=cmd_gc)


def _settings(args: argparse.Namespace):
    from kerasflow.settings import RunSettings

    values = {"work_dir": args.work_dir, "tracking_uri": args.tracking_uri}
    if getattr(args, "serving_dir", ""):
        values["serving_dir"] = args.serving_dir
    return RunSettings.from_values(values)


def cmd_lineage(args: argparse.Namespace) -> int:
    """Prints the chain of a served model, or the models trained on some data."""
    from kerasflow.pipelines import lineage

    if bool(args.model_name) == bool(args.data_digest):
        raise UserError("give --model-name NAME (and --version N) or --data-digest DIGEST")
    cfg = _settings(args)
    uri = cfg.resolved_tracking_uri()
    if args.data_digest:
        found = lineage.models_for_digest(uri, args.data_digest)
        print(json.dumps(found, indent=2) if args.json else lineage.format_digest(found))
        return 0
    trace = lineage.trace_model(uri, args.model_name, args.version, cfg.resolved_serving_dir())
    if args.json:
        print(json.dumps(trace, indent=2, default=str))
    else:
        print(lineage.format_trace(trace))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Reruns a pipeline run and prints the comparison; exit 1 when a metric is off."""
    from kerasflow.pipelines import local_run, reproduce

    if args.tolerance < 0:
        raise UserError(f"--tolerance must be >= 0, got {args.tolerance}")
    cfg = _settings(args)
    uri = cfg.resolved_tracking_uri()
    original = reproduce.read_original(uri, args.run_id)
    rerun = reproduce.reproduction_settings(
        original,
        tracking_uri=uri,
        work_dir=reproduce.reproduction_work_dir(cfg.work_dir, args.run_id),
        with_search=args.with_search,
        deploy=args.deploy,
    )
    what = "search and final fit" if args.with_search else "final fit on its best hyperparameters"
    print(
        f"kerasflow: reproducing pipeline run {args.run_id} ({what}, seed "
        f"{rerun.train.seed}, work dir {rerun.work_dir})",
        file=sys.stderr if args.json else sys.stdout,
        flush=True,
    )
    # With --json, stdout holds the one document: the steps' progress goes to stderr.
    progress = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    try:
        with progress:
            report = reproduce.reproduce(
                original,
                rerun,
                tolerance=args.tolerance,
                verbose=args.verbose,
                with_search=args.with_search,
            )
    except local_run.PipelineInterrupted as exc:
        print(f"kerasflow: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(reproduce.format_table(report["metrics"], args.tolerance))
        deployed = report["deployed_version"]
        print(
            f"kerasflow: reproduction run {report['reproduction_run']} of "
            f"{report['original_run']} on data {report['data_digest']}: "
            + ("reproduced" if report["reproduced"] else "NOT reproduced")
            + (f"; deployed as version {deployed}" if deployed else "; nothing deployed")
        )
    return 0 if report["reproduced"] else 1


def cmd_gc(args: argparse.Namespace) -> int:
    """Applies the retention policy (or lists what it would do)."""
    from kerasflow.pipelines import retention

    if args.keep < 1:
        raise UserError(f"--keep must be at least 1 (got {args.keep}): the newest version stays")
    if args.log_days is not None and not args.request_log:
        raise UserError("--log-days needs --request-log URI (the request log prefix)")
    if args.log_days is not None and args.log_days < 0:
        raise UserError(f"--log-days must be >= 0, got {args.log_days}")
    cfg = _settings(args)
    plan, done = retention.run_retention(
        tracking_uri=cfg.resolved_tracking_uri(),
        serving_dir=cfg.resolved_serving_dir(),
        work_dir=cfg.work_dir,
        keep=args.keep,
        model_name=args.model_name,
        log_uri=args.request_log,
        log_days=args.log_days,
        dry_run=args.dry_run,
    )
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, **plan.to_json()}, indent=2))
    else:
        print(retention.format_plan(plan, done, args.dry_run))
    return 0
