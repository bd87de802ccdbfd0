"""`kerasflow rollback` (make an earlier champion serve again) and `kerasflow reconcile` (end
MLflow runs whose process is gone)."""

from __future__ import annotations

import argparse

from kerasflow.pipelines.command_args import serving_dir_argument, store_arguments
from kerasflow.runtime import fileio


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `rollback` subcommand."""
    parser = subparsers.add_parser(
        "rollback",
        help="make the previous champion (or a given version) serve again",
        description="Moves the MLflow `champion` alias back to the previous champion (or to "
        "--to VERSION, a serving version number) and pins that version in "
        "SERVING_DIR/models.config, which `kerasflow serve --model_config_file` and TF Serving "
        "read.",
    )
    parser.add_argument("--model-name", required=True, help="the served model's name")
    parser.add_argument(
        "--to",
        type=int,
        default=None,
        metavar="VERSION",
        help="serving version to go back to (default: the previous champion)",
    )
    serving_dir_argument(parser)
    store_arguments(parser)
    parser.set_defaults(func=cmd_rollback)

    tidy = subparsers.add_parser(
        "reconcile",
        help="end MLflow runs left RUNNING by a process that is gone",
        description="Ends KILLED every RUNNING pipeline or step run of the experiment whose "
        "heartbeat is older than the lease its process promised (and the runs nested under "
        "it). `kerasflow run` does this itself before it starts; runs that are alive keep "
        "beating and are left alone.",
    )
    tidy.add_argument("--experiment", default="", help="MLflow experiment (default kerasflow)")
    store_arguments(tidy)
    tidy.set_defaults(func=cmd_reconcile)


def cmd_rollback(args: argparse.Namespace) -> int:
    """Moves the champion back and pins its serving version."""
    from kerasflow.settings import RunSettings
    from kerasflow.tracking import registry

    cfg = RunSettings.from_values(
        {
            "work_dir": args.work_dir,
            "serving_dir": args.serving_dir,
            "tracking_uri": args.tracking_uri,
            "model_name": args.model_name,
        }
    )
    uri = cfg.resolved_tracking_uri()
    target = None
    if args.to is not None:
        target = registry.registry_version_for(uri, args.model_name, args.to)
    serving_dir = cfg.resolved_serving_dir()
    path = fileio.join(serving_dir, registry.CONFIG_FILE)
    with fileio.exclusive_lock(serving_dir):  # as a deploy does: one publisher at a time
        champion = registry.rollback(uri, args.model_name, target, serving_dir=serving_dir)
    print(
        f"kerasflow: {args.model_name}: champion is now registry version "
        f"{champion.registry_version} (serving version {champion.serving_version}); "
        f"pinned in {path}"
    )
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    """Ends the experiment's orphaned runs and lists them."""
    from kerasflow.pipelines.local_run import prepare_tracking
    from kerasflow.settings import RunSettings

    values = {"work_dir": args.work_dir, "tracking_uri": args.tracking_uri}
    if args.experiment:
        values["experiment"] = args.experiment
    cfg = RunSettings.from_values(values)
    ended = prepare_tracking(cfg.resolved_tracking_uri(), cfg.experiment, cfg.tracking_timeout)
    for item in ended:
        print(f"kerasflow: {item}")
    print(f"kerasflow: reconciled {len(ended)} runs in experiment '{cfg.experiment}'")
    return 0
