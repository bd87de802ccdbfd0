"""The `kerasflow submit` and `kerasflow schedule` subcommands (runs on a KFP cluster).

The main CLI calls `register(subparsers)`; each subcommand stores its handler as `func`, and a
handler returns the exit code. Problems a user can cause are raised as `UserError`.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import inspect
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.pipelines import cluster
from kerasflow.pipelines.cluster_settings import ClusterSettings, settings_for_cluster
from kerasflow.pipelines.compiling import compile_pipeline
from kerasflow.runtime.errors import UserError
from kerasflow.settings import WHEN_CHOICES

DEFAULT_PIPELINE = "kerasflow.pipelines.dag:build_pipeline"
DEFAULT_TIMEOUT_S = 6 * 3600
DEFAULT_POLL_S = 10.0


def register(subparsers: Any) -> None:
    """Adds `submit` and `schedule` to the main CLI's subparsers.

    Args:
        subparsers: What `ArgumentParser.add_subparsers()` returned.
    """
    submit = subparsers.add_parser(
        "submit",
        help="compile the pipeline and start a run on a Kubeflow Pipelines cluster",
        description="Compile the training pipeline for a cluster and create a run with kfp.Client.",
    )
    _add_connection_args(submit)
    _add_pipeline_args(submit)
    submit.add_argument("--experiment", default=C.DEFAULT_EXPERIMENT, help="KFP experiment name")
    submit.add_argument("--run-name", help="run name (default: pipeline name and time)")
    submit.add_argument(
        "--wait", action="store_true", help="follow the run until it ends; exit 1 if it failed"
    )
    submit.add_argument(
        "--timeout",
        type=_positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help=f"with --wait, give up after S seconds (default {DEFAULT_TIMEOUT_S})",
    )
    submit.add_argument(
        "--poll-interval", type=_positive_float, default=DEFAULT_POLL_S, help=argparse.SUPPRESS
    )
    submit.set_defaults(func=handle_submit)

    schedule = subparsers.add_parser(
        "schedule",
        help="create, list, pause, resume or delete recurring runs on a cluster",
        description="Manage recurring (cron) runs of the training pipeline on Kubeflow Pipelines.",
    )
    _add_connection_args(schedule)
    _add_pipeline_args(schedule)
    action = schedule.add_mutually_exclusive_group(required=True)
    action.add_argument("--cron", help='create a recurring run, e.g. "0 3 * * *" (5 fields)')
    action.add_argument("--list", action="store_true", help="list recurring runs")
    action.add_argument("--pause", metavar="NAME_OR_ID", help="disable a recurring run")
    action.add_argument("--resume", metavar="NAME_OR_ID", help="enable a recurring run")
    action.add_argument("--delete", metavar="NAME_OR_ID", help="delete a recurring run")
    schedule.add_argument(
        "--name", default=f"{C.PIPELINE_NAME}-schedule", help="recurring run name (with --cron)"
    )
    schedule.add_argument("--experiment", default=C.DEFAULT_EXPERIMENT, help="KFP experiment")
    schedule.add_argument(
        "--max-concurrency", type=int, default=1, metavar="N", help="runs allowed at once"
    )
    schedule.add_argument(
        "--no-catchup",
        action="store_true",
        help="after a pause, start only the latest missed run instead of every missed one",
    )
    schedule.set_defaults(func=handle_schedule)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def _add_connection_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection")
    group.add_argument("--host", help=f"Kubeflow Pipelines URL (default ${cluster.HOST_ENV_VAR})")
    group.add_argument("--namespace", help="Kubernetes namespace (multi-user Kubeflow)")
    group.add_argument(
        "--token",
        help="bearer token (default $KERASFLOW_KFP_TOKEN or $KF_PIPELINES_TOKEN)",
    )
    group.add_argument("--token-file", help="file holding the bearer token")
    group.add_argument(
        "--iap-client-id",
        metavar="ID",
        help="OAuth client id of the Identity-Aware Proxy in front of Kubeflow (GKE); kfp "
        "logs in with an ID token for this audience instead of a bearer token",
    )
    group.add_argument(
        "--iap-other-client-id",
        metavar="ID",
        help="desktop OAuth client id for a browser login to IAP (default: the service "
        "account of Application Default Credentials)",
    )
    group.add_argument(
        "--iap-other-client-secret",
        metavar="SECRET",
        help=f"that desktop client's secret (default ${cluster.IAP_SECRET_ENV_VAR})",
    )


def _add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pipeline")
    group.add_argument("--image", help="component image, e.g. REGISTRY/kerasflow:TAG")
    group.add_argument(
        "--cluster-config", metavar="FILE", help="YAML cluster settings (resources, retries...)"
    )
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="pipeline parameter (repeatable); JSON for mappings such as thresholds",
    )
    group.add_argument(
        "--pipeline",
        default=DEFAULT_PIPELINE,
        metavar="MODULE:NAME",
        help="pipeline factory taking step_settings, or a pipeline function "
        f"(default {DEFAULT_PIPELINE})",
    )
    group.add_argument(
        "--when",
        choices=WHEN_CHOICES,
        default="always",
        help="train on every run (always), or check the data for drift from the champion's "
        "training data first and train only when they drifted (drifted); default always",
    )


def load_pipeline(reference: str, settings: ClusterSettings, when: str = "always") -> Any:
    """Imports `module:name` and returns a pipeline function built for `settings`.

    `name` may be a factory called as `name(step_settings=settings)` (and `when=...` unless
    "always") or a ready `@dsl.pipeline` function, used as it is.

    Raises:
        UserError: when the reference is malformed or cannot be imported.
    """
    from kfp.dsl import base_component

    module_name, sep, attr = reference.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"--pipeline '{reference}' must look like package.module:name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UserError(f"cannot import pipeline module '{module_name}': {exc}") from None
    target = getattr(module, attr, None)
    if target is None:
        raise UserError(f"module '{module_name}' has no '{attr}'")
    names = _parameter_names(target) if callable(target) else set()
    if when != "always" and "when" not in names:
        raise UserError(
            f"--when {when} needs a pipeline factory taking `when`; '{reference}' is not one"
        )
    if isinstance(target, base_component.BaseComponent):
        return target
    if "step_settings" not in names:
        raise UserError(f"'{reference}' is neither a pipeline nor a factory taking step_settings")
    pipeline = target(step_settings=settings, **({"when": when} if when != "always" else {}))
    if not isinstance(pipeline, base_component.BaseComponent):
        raise UserError(f"'{reference}' did not return a pipeline")
    return pipeline


def _parameter_names(target: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return set()


def _settings(args: argparse.Namespace) -> ClusterSettings:
    return settings_for_cluster(args.cluster_config, args.image)


def _connect(args: argparse.Namespace) -> tuple[Any, str]:
    host = cluster.resolve_host(args.host)
    iap = cluster.resolve_iap_login(
        args.iap_client_id, args.iap_other_client_id, args.iap_other_client_secret
    )
    token = cluster.resolve_token(args.token, args.token_file)
    if iap is not None and (args.token or args.token_file):
        raise UserError("give either --token/--token-file or --iap-client-id, not both")
    if iap is not None:
        token = None  # a token from the environment would not pass IAP
    return cluster.connect(host, token=token, namespace=args.namespace, iap=iap), host


def _namespace(args: argparse.Namespace, client: Any) -> str | None:
    """--namespace, else the namespace kfp's context file remembers (multi-user Kubeflow)."""
    if args.namespace:
        return args.namespace
    remembered = getattr(client, "get_user_namespace", lambda: None)()
    return remembered or None


def _with_package(
    args: argparse.Namespace, body: Callable[[Path, dict[str, Any], ClusterSettings], int]
) -> int:
    settings = _settings(args)
    pipeline = load_pipeline(args.pipeline, settings, args.when)
    with tempfile.TemporaryDirectory(prefix="kerasflow-submit-") as tmp:
        package = compile_pipeline(
            Path(tmp, "pipeline.yaml"), pipeline=pipeline, step_settings=settings
        )
        params = cluster.parse_params(args.param, cluster.declared_parameters(package))
        cluster.check_cluster_arguments(params, package)
        return body(package, params, settings)


def handle_submit(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    """`kerasflow submit`: compile, create a run, and with --wait follow it to the end."""

    def submit(package: Path, params: dict[str, Any], settings: ClusterSettings) -> int:
        client, host = _connect(args)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H-%M-%S")
        run_name = args.run_name or f"{C.PIPELINE_NAME} {stamp}"
        run_id = cluster.submit_run(
            client,
            host,
            package,
            experiment=args.experiment,
            run_name=run_name,
            params=params,
            pipeline_root=settings.pipeline_root,
            service_account=settings.service_account,
            namespace=args.namespace,
        )
        echo(f"submitted run {run_id} ({run_name}) to {host}")
        if not args.wait:
            return 0
        run = cluster.follow_run(
            client,
            host,
            run_id,
            timeout_s=args.timeout,
            poll_interval_s=args.poll_interval,
            echo=echo,
        )
        if run.state == cluster.SUCCEEDED:
            echo(f"run {run_id} succeeded")
            return 0
        error = cluster.run_error(run)
        echo(f"run {run_id} ended {run.state}" + (f": {error}" if error else ""))
        return 1

    return _with_package(args, submit)


def handle_schedule(args: argparse.Namespace, echo: Callable[[str], None] = print) -> int:
    """`kerasflow schedule`: create (--cron), --list, --pause, --resume or --delete."""
    if args.cron is not None:
        cluster.to_kfp_cron(args.cron)
        if args.max_concurrency < 1:
            raise UserError(f"--max-concurrency must be at least 1, got {args.max_concurrency}")

        def create(package: Path, params: dict[str, Any], settings: ClusterSettings) -> int:
            client, host = _connect(args)
            rr = cluster.create_schedule(
                client,
                host,
                package,
                experiment=args.experiment,
                name=args.name,
                cron=args.cron,
                params=params,
                max_concurrency=args.max_concurrency,
                no_catchup=args.no_catchup,
                pipeline_root=settings.pipeline_root,
                service_account=settings.service_account,
                namespace=args.namespace,
            )
            echo(f"created recurring run {rr.recurring_run_id} ({args.name}) at {host}")
            return 0

        return _with_package(args, create)

    client, host = _connect(args)
    namespace = _namespace(args, client)
    if args.list:
        rows = [cluster.schedule_row(rr) for rr in cluster.list_schedules(client, host, namespace)]
        _print_table(rows, echo)
        return 0
    target = args.pause or args.resume or args.delete
    rr = cluster.find_schedule(client, host, target, namespace)
    if args.delete:
        cluster.delete_schedule(client, host, rr.recurring_run_id)
        echo(f"deleted recurring run {rr.recurring_run_id} ({rr.display_name})")
    else:
        enabled = bool(args.resume)
        cluster.set_schedule_enabled(client, host, rr.recurring_run_id, enabled)
        verb = "resumed" if enabled else "paused"
        echo(f"{verb} recurring run {rr.recurring_run_id} ({rr.display_name})")
    return 0


def _print_table(rows: list[dict[str, str]], echo: Callable[[str], None]) -> None:
    if not rows:
        echo("no recurring runs")
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns}
    echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        echo("  ".join(row[c].ljust(widths[c]) for c in columns).rstrip())
