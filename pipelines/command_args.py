"""Flags that every command reading a run's stores declares the same way."""

from __future__ import annotations

import argparse

from kerasflow.settings.run import DEFAULT_WORK_DIR


def store_arguments(parser: argparse.ArgumentParser) -> None:
    """`--tracking-uri` and `--work-dir`: where the MLflow store is, as `kerasflow run` finds it."""
    parser.add_argument(
        "--tracking-uri",
        default="",
        help="MLflow URI (else MLFLOW_TRACKING_URI, else SQLite in WORK_DIR)",
    )
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR, help="as for `kerasflow run`")


def serving_dir_argument(parser: argparse.ArgumentParser) -> None:
    """`--serving-dir`: the TF Serving base directory, by default inside the work dir."""
    parser.add_argument(
        "--serving-dir", default="", help="TF Serving base directory (default WORK_DIR/models)"
    )
