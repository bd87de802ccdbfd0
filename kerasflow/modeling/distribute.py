"""Distribution of the final fit: the GPUs of one machine, and the multi-worker path.

On one machine the final fit runs under `MirroredStrategy` when more than one GPU is visible
and under TensorFlow's default strategy otherwise (no wrapping, no cost on the CPU path).

Several machines would run `MultiWorkerMirroredStrategy`, each worker finding the others
through `TF_CONFIG` (the variable a Kubeflow TFJob sets in every replica, see
kerasflow.runtime.tfjob), with Keras' `BackupAndRestore` so that a worker that restarts
resumes from the last finished epoch. On TensorFlow 2.21 with Keras 3.15, Keras' `fit` under
that strategy fails before the first step (keras-team/keras#20585): `run_worker` is the path
(`python -m kerasflow.modeling.distribute`), tests/local/test_train_workers.py runs it with two
loopback workers and records the error, and `train_workers` above 1 is refused until it passes.
"""

from __future__ import annotations

import json
import os
from typing import Any

MULTI_WORKER_BLOCKED = (
    "multi-worker training is not available: Keras 3's fit under MultiWorkerMirroredStrategy "
    "fails on this TensorFlow/Keras (keras-team/keras#20585); the final fit uses every GPU of "
    "its machine (MirroredStrategy)"
)
"""Why `train_workers` above 1 is refused."""

UPSTREAM_ERROR = ("ValueError: Attempt to convert a value (", "PerReplica:{", ") to a Tensor.")
"""Parts of the error Keras' fit raises under MultiWorkerMirroredStrategy (see above): it
cannot turn a batch of per-replica values (a dict of them for named inputs) into a tensor."""


def tf_config(workers: list[str], index: int, task_type: str = "worker") -> dict[str, Any]:
    """The TF_CONFIG document of one worker of a cluster of `workers` (host:port each).

    Raises:
        ValueError: for an empty cluster, an index outside it or a malformed address.
    """
    if not workers:
        raise ValueError("a cluster needs at least one worker")
    if not 0 <= index < len(workers):
        raise ValueError(f"worker index {index} is outside a cluster of {len(workers)}")
    for address in workers:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"worker address '{address}' is not host:port")
    return {"cluster": {"worker": list(workers)}, "task": {"type": task_type, "index": index}}


def cluster_from_env(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(number of workers, this worker's index) from TF_CONFIG; None when it is not set."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG", "")
    if not raw:
        return None
    doc = json.loads(raw)
    workers = doc.get("cluster", {}).get("worker", [])
    return len(workers), int(doc.get("task", {}).get("index", 0))


def visible_gpus() -> int:
    """GPUs TensorFlow sees."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def local_strategy() -> Any:
    """MirroredStrategy over the visible GPUs when there are several, else None."""
    import tensorflow as tf

    if visible_gpus() > 1:
        return tf.distribute.MirroredStrategy()
    return None


def multi_worker_strategy() -> Any:
    """MultiWorkerMirroredStrategy from TF_CONFIG; made before any other TensorFlow op, as its
    collective ops must be configured at program start."""
    import tensorflow as tf

    return tf.distribute.MultiWorkerMirroredStrategy()


def fit_multi_worker(
    strategy: Any,
    build: Any,
    train_ds: Any,
    val_ds: Any,
    *,
    epochs: int,
    backup_dir: str,
    seed: int = 0,
) -> tuple[Any, dict]:
    """Fits `build()`'s compiled model under `strategy` (see `multi_worker_strategy`).

    Every worker runs this with the same arguments and its own TF_CONFIG; the global batch is
    the datasets' batch, sharded by data across workers. `BackupAndRestore` keeps the state of
    the last finished epoch under `backup_dir` (shared by the workers; each writes its own
    part), so a restarted worker resumes there.

    Returns:
        The model and its history (per-epoch metrics).
    """
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    with strategy.scope():
        model = build()
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    history = model.fit(
        train_ds.with_options(options),
        validation_data=val_ds.with_options(options),
        epochs=epochs,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup_dir)],
    )
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def use_local_strategy() -> int:
    """Makes MirroredStrategy over the visible GPUs the current strategy of this thread when
    there are several (models built and fitted afterwards use it); returns the replicas.

    With one GPU or none nothing changes and this returns 1.
    """
    import tensorflow as tf

    strategy = local_strategy()
    if strategy is None:
        return 1
    tf.distribute.experimental_set_strategy(strategy)
    return int(strategy.num_replicas_in_sync)


def run_worker(argv: list[str] | None = None) -> int:
    """One worker of a multi-worker final fit (what each TFJob replica runs).

    Reads the splits and the best hyperparameters, fits under MultiWorkerMirroredStrategy
    from TF_CONFIG and prints one JSON line with the validation metrics; the first worker
    (index 0, TF_CONFIG's chief by convention) saves the model into `--model-dir`.
    """
    import argparse
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m kerasflow.modeling.distribute")
    parser.add_argument("--splits", required=True, help="normalize_split's Dataset folder")
    parser.add_argument("--train", required=True, help="the augmented train split's folder")
    parser.add_argument("--hparams", required=True, help="best hyperparameters (JSON file)")
    parser.add_argument("--model-dir", required=True, help="where worker 0 saves model.keras")
    parser.add_argument("--backup-dir", required=True, help="BackupAndRestore's shared folder")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    cluster = cluster_from_env()
    if cluster is None:
        print("error: TF_CONFIG is not set", file=sys.stderr)
        return 2
    strategy = multi_worker_strategy()

    import tempfile

    from kerasflow import constants as C
    from kerasflow.data.feeds import DataFeed, load_training_arrays
    from kerasflow.modeling import builders
    from kerasflow.runtime import fileio

    # The artifacts' URIs: local folders, or object-store paths every worker pod can read.
    with fileio.local_copy(args.splits) as splits, fileio.local_copy(args.train) as train:
        arrays = load_training_arrays(str(splits), str(train))
    hparams = json.loads(fileio.read_bytes(args.hparams))
    train_ds, val_ds = DataFeed(arrays, args.seed).datasets(args.batch_size)

    def build() -> Any:
        return builders.build_model(builders.fixed_hyperparameters(hparams), arrays.meta)

    model, history = fit_multi_worker(
        strategy,
        build,
        train_ds,
        val_ds,
        epochs=args.epochs,
        backup_dir=args.backup_dir,
        seed=args.seed,
    )
    _, index = cluster
    if index == 0:
        with tempfile.TemporaryDirectory(prefix="kerasflow-worker-") as tmp:
            model.save(Path(tmp, C.KERAS_MODEL_FILE))
            fileio.write_json_atomic(Path(tmp, C.HISTORY_FILE), history)
            if fileio.is_remote(args.model_dir):
                fileio.upload_dir(Path(tmp), args.model_dir)
            else:
                fileio.copy_dir_atomic(Path(tmp), args.model_dir)
    last = {k: v[-1] for k, v in history.items() if k.startswith("val_")}
    print(json.dumps({"worker": index, "workers": cluster[0], **last}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_worker())
