"""The `kerasflow` command line: run, compile, and the serving and cluster commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from kerasflow import __version__
from kerasflow.runtime.errors import UserError
from kerasflow.settings.cli import add_run_arguments


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one `kerasflow: error:` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"kerasflow: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = OneLineParser(
        prog="kerasflow",
        description="Tune, train, evaluate and serve Keras models as a Kubeflow pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"kerasflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the whole pipeline on this machine (kfp.local)",
        description="Runs the whole pipeline on this machine. Every setting is a flag and a key "
        "of the --config YAML file (flags win); they are grouped by the step that reads them.",
    )
    run.add_argument("--config", help="YAML file with the same keys as the flags")
    add_run_arguments(run)
    run.add_argument(
        "--threshold",
        action="append",
        default=None,
        metavar="METRIC=VALUE",
        help="blessing threshold, e.g. accuracy=0.9 (repeatable)",
    )
    run.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="show every log line of every step (always kept in WORK_DIR/logs)",
    )
    run.add_argument("--summary-json", help="write the run summary as JSON to this path")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="check every setting and the data source, print the settings as a --config YAML "
        "file and stop without running",
    )
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="run each step in a subprocess (default) or in a container of --image "
        "(kfp.local's DockerRunner; needs a Docker engine)",
    )
    run.add_argument(
        "--image",
        default="",
        help="the component image for --runner docker, e.g. kerasflow:dev (docker/build.sh)",
    )
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compile", help="write the pipeline as KFP IR YAML")
    comp.add_argument("--output", "-o", default="pipeline.yaml", help="output YAML path")
    comp.add_argument("--image", default="", help="component image, e.g. REGISTRY/kerasflow:TAG")
    comp.add_argument(
        "--cluster-config",
        default="",
        metavar="FILE",
        help="cluster settings YAML (resources, retries, caching, secrets, GPU "
        "nodes, pipeline root), as for `kerasflow submit`; without it the built-in ones apply",
    )
    comp.add_argument(
        "--when",
        choices=("always", "drifted"),
        default="always",
        help="drifted: the pipeline checks the data for drift first and trains only when they "
        "drifted from the champion's training data (default always)",
    )
    comp.set_defaults(func=cmd_compile)

    _register_optional(sub)
    return parser


def _register_optional(sub: argparse._SubParsersAction) -> None:
    import importlib

    for module in (
        "kerasflow.serving.commands",
        "kerasflow.pipelines.cluster_commands",
        "kerasflow.pipelines.registry_commands",
        "kerasflow.pipelines.canary_commands",
        "kerasflow.pipelines.tensorboard_commands",
        "kerasflow.pipelines.drift_commands",
        "kerasflow.pipelines.lineage_commands",
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(sub)


def config_from_args(args: argparse.Namespace):
    """The validated RunSettings of `kerasflow run`'s flags and config file."""
    from kerasflow.data.sources import check_source
    from kerasflow.settings import RunSettings, load_config_file, parse_thresholds
    from kerasflow.settings.cli import overrides_from_args

    file_values = load_config_file(args.config) if args.config else {}
    overrides = overrides_from_args(args)
    if args.threshold:
        overrides["thresholds"] = parse_thresholds(args.threshold)
    cfg = RunSettings.from_values(file_values, overrides)
    for step in (cfg.hyperparameter_search, cfg.train):
        if step.build_model:
            from kerasflow.modeling.search_space import absolute_build_ref, load_build_function

            step.build_model = absolute_build_ref(step.build_model)
            load_build_function(step.build_model)
    from kerasflow.modeling.transfer import check_base_weights

    check_base_weights(cfg.train.base_model, cfg.train.base_weights)
    ingest = cfg.ingest_clean
    check_source(
        ingest.data,
        ingest.label,
        text_column=ingest.text_column,
        time_column=ingest.time_column,
        schema=ingest.schema,
        synonyms=cfg.augment.synonyms,
    )
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    """`kerasflow run`: the whole pipeline under kfp.local, then a summary."""
    from kerasflow.pipelines import local_run
    from kerasflow.runtime.fileio import write_json_atomic

    if args.image and args.runner != "docker":
        raise UserError("--image names the image of --runner docker; add --runner docker")
    cfg = config_from_args(args)
    if args.dry_run:
        import yaml

        sys.stdout.write(yaml.safe_dump(cfg.config_values(), sort_keys=False))
        print("kerasflow: the settings are valid; nothing was run", file=sys.stderr)
        return 0
    print(
        f"kerasflow: running {cfg.ingest_clean.data} with the {cfg.hyperparameter_search.tuner} "
        f"tuner (work dir {cfg.work_dir})",
        flush=True,
    )
    try:
        summary = local_run.run_pipeline(
            cfg, verbose=args.verbose, runner=args.runner, image=args.image
        )
    except local_run.PipelineInterrupted as exc:
        print(f"kerasflow: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except local_run.PipelineFailed as exc:
        raise UserError(str(exc)) from None
    print(local_run.format_summary(summary), flush=True)
    if args.summary_json:
        write_json_atomic(args.summary_json, summary.to_json())
    if cfg.keep_versions:
        from kerasflow.pipelines import retention

        _, done = retention.run_retention(
            tracking_uri=cfg.resolved_tracking_uri(),
            serving_dir=cfg.resolved_serving_dir(),
            work_dir=cfg.work_dir,
            keep=cfg.keep_versions,
            model_name=cfg.deploy.model_name,
        )
        print(f"  retention: kept the newest {cfg.keep_versions}; deleted {len(done)}:")
        print("\n".join(f"    {d.describe()}" for d in done) or "    nothing", flush=True)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """`kerasflow compile`: the KFP IR YAML of the pipeline."""
    from kerasflow.pipelines.cluster_settings import settings_for_cluster
    from kerasflow.pipelines.compiling import compile_pipeline

    # The settings `submit` and `schedule` compile with: the built-in ones unless a file is given.
    from kerasflow.pipelines.dag import build_pipeline

    settings = settings_for_cluster(args.cluster_config, args.image)
    pipeline = build_pipeline(settings, when=args.when)
    path = compile_pipeline(
        args.output, pipeline=pipeline, image=args.image, step_settings=settings
    )
    print(f"kerasflow: wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `kerasflow` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"kerasflow: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kerasflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
