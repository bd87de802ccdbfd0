"""The `kerasflow` command line: run, compile, and the serving and cluster commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kerasflow import __version__
from kerasflow.errors import UserError

RUN_FLAGS = (
    # flag, type, help
    (
        "--data",
        str,
        "data URI: builtin:NAME, a local file or folder, or gs://... (default builtin:digits)",
    ),
    ("--label", str, "label column (table data)"),
    ("--task", str, "classification or regression (inferred when absent)"),
    ("--modality", str, "tabular, image or text (inferred when absent)"),
    ("--tuner", str, "random, grid, bayesian or hyperband (default hyperband)"),
    ("--max-trials", int, "trials for random, grid and bayesian search"),
    ("--max-epochs", int, "epochs per trial (hyperband: the most a trial gets)"),
    ("--final-epochs", int, "most epochs of the final fit (early stopping ends it sooner)"),
    ("--batch-size", int, "batch size"),
    ("--augment-factor", int, "augmented copies of each training row (0 turns it off)"),
    (
        "--augment-methods",
        str,
        "comma list: image flip,rotation,zoom,translation,contrast,noise; table noise,smote,"
        "mixup; text deletion,swap,insertion,synonym (default: per modality)",
    ),
    ("--synonyms", str, "JSON/YAML word map (word: [synonyms]) for text synonym replacement"),
    ("--image-size", str, "resize images to N or HxW (default: the most common size)"),
    ("--text-column", str, "the free-text column of a table (inferred when absent)"),
    ("--time-column", str, "split by time: oldest rows train, newest test"),
    ("--missing-values", str, "drop, mean, median, most_frequent, constant or knn (median)"),
    ("--outliers", str, "outlier rule: iqr, zscore or none (iqr)"),
    ("--outlier-action", str, "what to do with outliers: clip, drop or keep (clip)"),
    ("--schema", str, "saved schema to validate the data against (a schema.json or its folder)"),
    ("--max-missing-share", float, "schema limit on a column's share of missing values (0.3)"),
    ("--max-anomaly-share", float, "share of out-of-range or new-category values allowed (0.01)"),
    ("--min-class-rows", int, "fewest rows a class may have (3)"),
    ("--scaling", str, "numeric scaling inside the model: zscore or minmax (zscore)"),
    ("--imbalance", str, "class_weights, smote (oversample the train split) or none"),
    ("--folds", int, "also assign k cross-validation folds (0: off)"),
    ("--slice-by", str, "also report test metrics per value of this column"),
    (
        "--champion-tolerance",
        float,
        "how much worse than the champion a model may be and still be blessed (default 0.01)",
    ),
    ("--model-name", str, "name of the served model"),
    ("--serving-dir", str, "TF Serving model base directory (default WORK_DIR/models)"),
    (
        "--tracking-uri",
        str,
        "MLflow tracking URI (else MLFLOW_TRACKING_URI, else SQLite in WORK_DIR)",
    ),
    ("--experiment", str, "MLflow experiment name"),
    ("--work-dir", str, "where runs keep their files (default ./kerasflow-work)"),
    ("--seed", int, "random seed"),
    ("--objective", str, "metric the search optimizes (val_accuracy; regression val_loss)"),
    ("--direction", str, "max or min (inferred from the objective)"),
    ("--time-budget", str, "wall-clock budget of the search, e.g. 90s, 10m, 1h30m (none)"),
    ("--tuner-workers", int, "trial processes in parallel inside the search step (1)"),
    (
        "--trials-per-process",
        int,
        "trials a worker process runs before a fresh one takes over (5; 0: all in the step)",
    ),
    ("--kfold", int, "score each trial by k-fold cross-validation (0: off)"),
    ("--max-consecutive-failures", int, "failed trials in a row that stop the search (3)"),
    ("--build-model", str, "your own model: module:function or file.py:function taking hp"),
    ("--lr-schedule", str, "learning-rate schedule of the final fit: cosine or exponential"),
    ("--refit", bool, "refit the final model on train+val for the best epoch count"),
    ("--warm-start", bool, "fine-tune the serving champion instead of training from scratch"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="kerasflow",
        description="Tune, train, evaluate and serve Keras models as a Kubeflow pipeline.",
    )
    parser.add_argument("--version", action="version", version=f"kerasflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the whole pipeline on this machine (kfp.local)")
    run.add_argument("--config", help="YAML file with the same keys as the flags")
    for flag, kind, text in RUN_FLAGS:
        if kind is bool:
            run.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            run.add_argument(flag, type=kind, default=None, help=text)
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
    run.set_defaults(func=cmd_run)

    comp = sub.add_parser("compile", help="write the pipeline as KFP IR YAML")
    comp.add_argument("--output", "-o", default="pipeline.yaml", help="output YAML path")
    comp.add_argument("--image", default="", help="component image, e.g. REGISTRY/kerasflow:TAG")
    comp.add_argument(
        "--cluster-config",
        default="",
        metavar="FILE",
        help="cluster settings YAML (resources, retries, caching, secrets, GPU "
        "nodes, pipeline root), as for `kerasflow submit`",
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
    ):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.register(sub)


def config_from_args(args: argparse.Namespace):
    """The validated RunConfig of `kerasflow run`'s flags and config file."""
    from kerasflow import settings
    from kerasflow.sources import check_source

    file_values = settings.load_config_file(args.config) if args.config else {}
    overrides = {
        flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
        for flag, _, _ in RUN_FLAGS
    }
    if args.threshold:
        overrides["thresholds"] = settings.parse_thresholds(args.threshold)
    cfg = settings.build_config(file_values, overrides)
    if cfg.build_model:
        from kerasflow.search_space import absolute_build_ref, load_build_function

        cfg.build_model = absolute_build_ref(cfg.build_model)
        load_build_function(cfg.build_model)
    check_source(
        cfg.data,
        cfg.label,
        text_column=cfg.text_column,
        time_column=cfg.time_column,
        schema=cfg.schema,
        synonyms=cfg.synonyms,
    )
    if cfg.thresholds:
        from kerasflow.components.evaluate.core import (
            CLASSIFICATION_METRICS,
            REGRESSION_METRICS,
        )

        known = set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS)
        for name in cfg.thresholds:
            if name not in known:
                raise UserError(
                    f"threshold on unknown metric '{name}' (choose from {', '.join(sorted(known))})"
                )
    return cfg


def cmd_run(args: argparse.Namespace) -> int:
    """`kerasflow run`: the whole pipeline under kfp.local, then a summary."""
    from kerasflow.fileio import write_json_atomic
    from kerasflow.pipelines import local

    cfg = config_from_args(args)
    print(
        f"kerasflow: running {cfg.data} with the {cfg.tuner} tuner (work dir {cfg.work_dir})",
        flush=True,
    )
    try:
        summary = local.run_pipeline(cfg, verbose=args.verbose)
    except local.PipelineFailed as exc:
        raise UserError(str(exc)) from None
    print(local.format_summary(summary), flush=True)
    if args.summary_json:
        write_json_atomic(args.summary_json, summary.to_json())
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    """`kerasflow compile`: the KFP IR YAML of the pipeline."""
    from kerasflow.pipelines.compiling import compile_pipeline

    settings = None
    if args.cluster_config:
        from kerasflow.pipelines.platform import load_cluster_settings

        settings = load_cluster_settings(args.cluster_config)
        if args.image:
            settings = settings.with_image(args.image)
    path = compile_pipeline(args.output, image=args.image, step_settings=settings)
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
