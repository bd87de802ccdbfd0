"""`kerasflow tensorboard RUN_ID`: TensorBoard on the logs a pipeline run tracked in MLflow.

The train step logs its final fit's TensorBoard logs, and the search step its trials' (with
`tensorboard_trials`), under their MLflow runs' `tensorboard/` artifact folder. The command
downloads them from the given run and the runs nested under it, one folder per step, and
runs TensorBoard on them (installed with TensorFlow), or only downloads them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from kerasflow import constants as C
from kerasflow.pipelines.command_args import store_arguments
from kerasflow.runtime.errors import UserError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Adds the `tensorboard` subcommand."""
    parser = subparsers.add_parser(
        "tensorboard",
        help="open the TensorBoard logs of a pipeline run",
        description="Downloads the TensorBoard logs tracked under MLflow run RUN_ID (a "
        "pipeline run or a step run) and the runs nested under it, one folder per step, then "
        "runs TensorBoard on them.",
    )
    parser.add_argument("run_id", metavar="RUN_ID", help="MLflow run id (e.g. from the summary)")
    parser.add_argument(
        "--logdir", default="", help="where to download the logs (default: a temporary folder)"
    )
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard's port (6006)")
    parser.add_argument("--host", default="127.0.0.1", help="TensorBoard's address (127.0.0.1)")
    parser.add_argument(
        "--download-only", action="store_true", help="download the logs and print where"
    )
    store_arguments(parser)
    parser.set_defaults(func=cmd_tensorboard)


def download_logs(tracking_uri: str, run_id: str, logdir: Path) -> list[str]:
    """Downloads the `tensorboard/` artifacts of `run_id` and its nested runs into `logdir`.

    Returns:
        The folders written, one per run that had logs (named by its step, else its id).

    Raises:
        UserError: when the run does not exist or none of these runs has TensorBoard logs.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise UserError(f"no MLflow run '{run_id}' at {tracking_uri}") from None
    found = [run]
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'")
    found += children
    logdir.mkdir(parents=True, exist_ok=True)
    written = []
    for item in found:
        names = {a.path for a in client.list_artifacts(item.info.run_id)}
        if C.TENSORBOARD_DIR not in names:
            continue
        name = item.data.tags.get(C.TAG_STEP) or item.info.run_id
        dest = logdir / name
        if dest.exists():
            shutil.rmtree(dest)
        with tempfile.TemporaryDirectory(dir=logdir) as tmp:
            got = mlflow.artifacts.download_artifacts(
                run_id=item.info.run_id,
                artifact_path=C.TENSORBOARD_DIR,
                dst_path=tmp,
                tracking_uri=tracking_uri,
            )
            Path(got).rename(dest)  # one folder per step: TensorBoard names its runs by it
        written.append(str(dest))
    if not written:
        raise UserError(
            f"run '{run_id}' and its steps have no TensorBoard logs (the train step writes "
            "them unless --no-tensorboard; trials with --tensorboard-trials)"
        )
    return written


def cmd_tensorboard(args: argparse.Namespace) -> int:
    """Downloads a run's TensorBoard logs and runs TensorBoard on them."""
    from kerasflow.settings import RunSettings

    cfg = RunSettings.from_values({"work_dir": args.work_dir, "tracking_uri": args.tracking_uri})
    logdir = Path(args.logdir or tempfile.mkdtemp(prefix="kerasflow-tensorboard-"))
    written = download_logs(cfg.resolved_tracking_uri(), args.run_id, logdir)
    print(f"kerasflow: TensorBoard logs of {len(written)} runs in {logdir}")
    if args.download_only:
        print(f"kerasflow: open them with: tensorboard --logdir {logdir}")
        return 0
    print(
        f"kerasflow: TensorBoard at http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True
    )
    # TensorBoard runs in this process, so whatever stops the command stops it, and TensorFlow
    # starts without its C++ start-up lines, as in the serving commands.
    from tensorboard import main as tensorboard_main

    from kerasflow.runtime.quiet_tf import import_tensorflow_quietly

    import_tensorflow_quietly()
    sys.argv = ["tensorboard", "--logdir", str(logdir), "--port", str(args.port),
                "--host", args.host]  # fmt: skip
    tensorboard_main.run_main()  # serves until interrupted; exits with TensorBoard's status
    return 0
