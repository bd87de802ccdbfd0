"""`kerasflow canary`: try a canary on real requests, then promote it or roll it back.

The canary is the version a deploy with the setting `canary` served beside `stable` (see
kerasflow.tracking.canary_config for the config states). The command labels it `canary` once the
server has loaded it, replays logged (or given) requests against both labels, compares the
figures with the limits, and then either promotes (moves `stable` to the canary while both
serve, then drops the old version and moves the MLflow `champion` alias) or rolls back (drops the
canary). Every config change waits until the server shows it applied before the next one, so no
request for `stable` finds its version gone. The decision and the figures go to MLflow as a run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from kerasflow.pipelines.command_args import serving_dir_argument, store_arguments
from kerasflow.runtime import fileio
from kerasflow.runtime.errors import UserError

DECISION_TAG = "kerasflow.canary_decision"
PROMOTED = "promoted"
ROLLED_BACK = "rolled_back"


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not above 0")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `canary` subcommand."""
    from kerasflow.serving.canary import Limits

    limits = Limits()
    parser = subparsers.add_parser(
        "canary",
        help="compare the canary with stable on real requests, then promote or roll back",
        description="Replays logged (--requests) or given (--input) requests against the "
        "`stable` and `canary` labels of a served model, compares the canary's error rate, "
        "p50 latency and agreement with stable against the limits, then promotes it (stable "
        "moves to it in SERVING_DIR/models.config, the MLflow champion alias follows) or rolls "
        "it back (it leaves the config). The server must re-read the config "
        "(--model_config_file_poll_wait_seconds).",
    )
    parser.add_argument("--model-name", required=True, help="the served model's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--requests", metavar="LOG_URI", help="request log of `kerasflow serve --request_log_uri`"
    )
    source.add_argument(
        "--input", metavar="FILE", help="rows, images or texts as `kerasflow predict` takes them"
    )
    parser.add_argument(
        "--max-requests", type=int, default=200, help="requests replayed at most (default 200)"
    )
    parser.add_argument(
        "--max-error-rate",
        type=_fraction,
        default=limits.max_error_rate,
        help=f"largest share of failed canary requests (default {limits.max_error_rate:g})",
    )
    parser.add_argument(
        "--max-latency-ratio",
        type=_positive,
        default=limits.max_latency_ratio,
        help=f"largest canary/stable p50 latency (default {limits.max_latency_ratio:g})",
    )
    parser.add_argument(
        "--min-agreement",
        type=_fraction,
        default=limits.min_agreement,
        help=f"smallest share of rows answered as stable does (default {limits.min_agreement:g})",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC address of the server")
    target.add_argument("--rest", metavar="URL", help="REST base URL of the server")
    parser.add_argument(
        "--wait-seconds",
        type=_positive,
        default=120.0,
        help="how long the server may take to load the canary or apply a config (default 120)",
    )
    serving_dir_argument(parser)
    store_arguments(parser)
    parser.set_defaults(func=cmd_canary)


def _client(args: argparse.Namespace):
    from kerasflow.serving.client import GrpcClient, RestClient

    if args.grpc:
        from kerasflow.runtime.quiet_tf import import_tensorflow_quietly

        import_tensorflow_quietly()  # the gRPC protos import TensorFlow
        return GrpcClient(args.grpc)
    if not args.rest.startswith(("http://", "https://")):
        raise UserError(f"--rest wants an http:// or https:// URL, got {args.rest!r}")
    return RestClient(args.rest)


def _wait(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise UserError(
                f"the server did not {what} within {seconds:g} s; does it serve "
                "SERVING_DIR/models.config with --model_config_file_poll_wait_seconds?"
            )
        time.sleep(0.1)


class Trial:
    """One canary trial: the server, the serving config and the registry it moves."""

    def __init__(self, args: argparse.Namespace, client, serving_dir: str, tracking_uri: str):
        self.args, self.client = args, client
        self.model, self.serving_dir, self.tracking_uri = (
            args.model_name,
            serving_dir,
            tracking_uri,
        )

    def _locked(self):
        # One writer of the serving config at a time, as deploys and rollbacks take it.
        return fileio.exclusive_lock(self.serving_dir)

    def _wait_label(self, label: str, version: int | None, what: str) -> None:
        _wait(
            lambda: self.client.label_version(self.model, label) == version,
            self.args.wait_seconds,
            what,
        )

    def label_canary(self):
        """Labels the canary once the server has it loaded; returns the served state and
        whether the canary loaded (a version that failed to load is never labelled)."""
        from kerasflow.tracking import canary_config as cc

        served = cc.on_trial(self.serving_dir, self.model)
        if served.labels.get(cc.CANARY) != served.canary:
            states = []
            _wait(
                lambda: (
                    states.append(self.client.version_state(self.model, served.canary))
                    or states[-1] in ("AVAILABLE", "END")
                ),
                self.args.wait_seconds,
                f"load canary version {served.canary}",
            )
            if states[-1] == "END":
                return served, False
            with self._locked():
                served = cc.label(self.serving_dir, self.model)
        self._wait_label(cc.CANARY, served.canary, f"label version {served.canary} canary")
        self._wait_label(cc.STABLE, served.stable, f"label version {served.stable} stable")
        return served, True

    def requests(self, stable: int) -> list:
        """The requests to replay, typed as the model's signature says."""
        from kerasflow.serving import canary
        from kerasflow.serving.inputs import read_batch
        from kerasflow.serving.signature import DEFAULT_SIGNATURE

        limit = max(1, self.args.max_requests)
        specs = self.client.input_specs(self.model, stable, DEFAULT_SIGNATURE)
        if self.args.requests:
            return canary.requests_from_log(self.args.requests, self.model, specs, limit)
        return canary.split_rows(read_batch(self.args.input, specs).inputs, limit)

    def promote(self, served) -> str:
        """Moves `stable` to the canary, drops the old version, moves the champion alias."""
        from kerasflow.tracking import canary_config as cc
        from kerasflow.tracking import registry

        registry_version = registry.registry_version_for(
            self.tracking_uri, self.model, served.canary
        )
        with self._locked():
            cc.move_stable(self.serving_dir, self.model, served)
        self._wait_label(cc.STABLE, served.canary, f"move stable to version {served.canary}")
        with self._locked():
            previous = registry.read_serving_config(self.serving_dir)
            path = cc.keep_only(self.serving_dir, self.model, served.canary)
            try:
                registry.promote(self.tracking_uri, self.model, registry_version)
            except BaseException:
                registry.restore_serving_config(self.serving_dir, previous)
                raise
        self._wait_label(cc.CANARY, None, "drop the canary label")
        return path

    def roll_back(self, served) -> str:
        """Drops the canary; `stable` never left its version."""
        from kerasflow.tracking import canary_config as cc

        with self._locked():
            path = cc.keep_only(self.serving_dir, self.model, served.stable)
        self._wait_label(cc.CANARY, None, "drop the canary label")
        return path


def _record(cfg, trial: Trial, served, figures, decision: str, missed: list[str]) -> str:
    """Logs the trial as an MLflow run; returns its id."""
    import math

    import mlflow

    from kerasflow.tracking import runs

    experiment_id = runs.configure(trial.tracking_uri, cfg.experiment)
    args = trial.args
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"canary {trial.model} v{served.canary}"
    ) as run:
        mlflow.log_params(
            {
                "model_name": trial.model,
                "stable_version": served.stable,
                "canary_version": served.canary,
                "requests_source": args.requests or args.input,
                "max_error_rate": args.max_error_rate,
                "max_latency_ratio": args.max_latency_ratio,
                "min_agreement": args.min_agreement,
            }
        )
        mlflow.log_metrics({k: v for k, v in figures.metrics().items() if math.isfinite(v)})
        mlflow.set_tags(
            {
                DECISION_TAG: decision,
                "kerasflow.canary_missed": "; ".join(missed)[:5000],
                "kerasflow.model_name": trial.model,
            }
        )
    return run.info.run_id


def cmd_canary(args: argparse.Namespace) -> int:
    """Labels, replays, judges, then promotes or rolls back; prints the figures."""
    from kerasflow.serving import canary
    from kerasflow.settings import RunSettings

    cfg = RunSettings.from_values(
        {
            "work_dir": args.work_dir,
            "serving_dir": args.serving_dir,
            "tracking_uri": args.tracking_uri,
            "model_name": args.model_name,
        }
    )
    if args.max_requests < 1:
        raise UserError("--max-requests must be at least 1")
    trial = Trial(args, _client(args), cfg.resolved_serving_dir(), cfg.resolved_tracking_uri())
    served, loaded = trial.label_canary()
    if loaded:
        requests = trial.requests(served.stable)
        figures = canary.replay(trial.client, trial.model, requests)
        limits = canary.Limits(args.max_error_rate, args.max_latency_ratio, args.min_agreement)
        missed = canary.judge(figures, limits)
    else:
        figures = canary.Figures.nothing_replayed()
        missed = [f"canary version {served.canary} failed to load on the server"]
    print(
        f"kerasflow canary: {trial.model}: stable v{served.stable} vs canary v{served.canary} "
        f"on {figures.requests} requests: errors {figures.stable_error_rate:.3f} vs "
        f"{figures.canary_error_rate:.3f}, p50 {figures.stable_p50_ms:.2f} vs "
        f"{figures.canary_p50_ms:.2f} ms (ratio {figures.latency_ratio:.2f}), p99 "
        f"{figures.stable_p99_ms:.2f} vs {figures.canary_p99_ms:.2f} ms, agreement "
        f"{figures.agreement:.3f}",
        flush=True,
    )
    if missed:
        path = trial.roll_back(served)
        decision = ROLLED_BACK
        outcome = f"rolled back (missed: {'; '.join(missed)}); version {served.stable} serves"
    else:
        path = trial.promote(served)
        decision = PROMOTED
        outcome = f"promoted; version {served.canary} is stable and champion"
    run_id = _record(cfg, trial, served, figures, decision, missed)
    print(f"kerasflow canary: {trial.model}: {outcome}; {path}; MLflow run {run_id}")
    return 0
