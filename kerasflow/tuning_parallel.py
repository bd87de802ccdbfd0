"""Parallel trials with KerasTuner's distributed mode: a chief oracle over gRPC and workers.

Inside one step (`--tuner-workers N`), the step process is the chief: it serves its oracle
(KerasTuner's own OracleServicer) on loopback and starts N worker processes
(`python -m kerasflow.tuning_parallel SPEC TUNER_ID ADDRESS THREADS`) with the KERASTUNER_*
variables set; each worker asks the chief for a trial, runs it and reports the result.

On a cluster the workers can be pods: the chief then listens on its pod address and writes a
rendezvous file under the pipeline root (`address`, the search spec, and `finished` once it is
done); each worker pod polls that file, joins, and leaves when the search is over.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kerasflow import fileio, stepio
from kerasflow.errors import UserError
from kerasflow.tuning import (
    CHIEF_ID,
    SearchOutcome,
    SearchSpec,
    finished_trials,
    make_hypermodel,
    make_tuner,
    outcome,
)

POLL_S = 0.5
RENDEZVOUS_TIMEOUT_S = 900.0
"""How long worker pods wait for the chief, and the chief for a first worker pod."""


def free_port() -> int:
    """A TCP port that is free on this machine now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def serve_oracle(oracle: Any, bind: str) -> tuple[Any, Any]:
    """Serves `oracle` with KerasTuner's OracleServicer on `bind` (host:port).

    KerasTuner's own `start_server` checks for the end every 20 seconds; the chief here
    watches its workers instead and stops the server as soon as they are done.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(bind)
    server.start()
    return server, servicer


def _meta_feed(meta: dict) -> Any:
    from kerasflow.trainingdata import FixedFeed

    return FixedFeed(meta, None, None)


def spawn_worker(spec_path: Path, tuner_id: str, address: str, threads: int) -> subprocess.Popen:
    """Starts one worker process; its output goes to this process's stdout and stderr."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    cmd = [
        sys.executable,
        "-m",
        "kerasflow.tuning_parallel",
        str(spec_path),
        tuner_id,
        address,
        str(threads),
    ]
    return subprocess.Popen(cmd, env=env)


def run_parallel_search(
    spec: SearchSpec,
    meta: dict,
    workers: int,
    pods: int = 0,
    rendezvous: str = "",
) -> SearchOutcome:
    """Runs the search as a chief oracle with `workers` local worker processes.

    Args:
        spec: the search; `spec.tuner_dir` holds the trials (and resumes them).
        meta: the bundle metadata (the chief builds models only to learn the space).
        workers: worker processes started here on loopback.
        pods: worker pods expected to join through `rendezvous` (cluster fan-out).
        rendezvous: where the chief publishes its address for worker pods.

    Raises:
        UserError: when no trial finished.
    """
    import keras

    keras.utils.set_random_seed(spec.seed)
    port = free_port()
    host = "127.0.0.1" if not pods else socket.gethostbyname(socket.gethostname())
    address = f"{host}:{port}"
    tuner = make_tuner(spec, make_hypermodel(spec, _meta_feed(meta)), CHIEF_ID, address)
    tuner.save()
    oracle = tuner.oracle
    kept = finished_trials(oracle)
    if kept:
        stepio.progress(spec.step_name, f"resuming: {kept} finished trials kept")
    server, servicer = serve_oracle(oracle, f"{'0.0.0.0' if pods else host}:{port}")
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="kerasflow-workers-") as tmp:
        spec_path = Path(tmp, "spec.json")
        spec_path.write_text(spec.to_json())
        if pods:
            write_rendezvous(
                rendezvous,
                {"address": address, "spec": json.loads(spec.to_json()), "finished": False},
            )
        try:
            stepio.progress(
                spec.step_name,
                f"chief oracle at {address}: {workers} workers"
                + (f" and {pods} worker pods" if pods else ""),
            )
            for i in range(workers):
                procs.append(spawn_worker(spec_path, f"worker{i}", address, threads))
            _wait(procs, oracle, servicer, pods, spec)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            server.stop(grace=None)
            if pods:
                write_rendezvous(rendezvous, {"address": address, "finished": True})
    for i, proc in enumerate(procs):
        if proc.returncode:
            stepio.progress(spec.step_name, f"worker{i} exited with code {proc.returncode}")
    return outcome(oracle, kept)


def _wait(procs: list, oracle: Any, servicer: Any, pods: int, spec: SearchSpec) -> None:
    """Returns when the local workers have exited and, with pods, the oracle is done."""
    started = time.time()
    while True:
        time.sleep(POLL_S)
        local_done = all(p.poll() is not None for p in procs)
        if not pods:
            if local_done:
                return
            continue
        oracle_done = not oracle.ongoing_trials and not oracle.tuner_ids
        if local_done and servicer.stop_triggered and oracle_done:
            return
        if local_done and not oracle.trials and time.time() - started > RENDEZVOUS_TIMEOUT_S:
            raise UserError(f"no worker pod joined the search within {RENDEZVOUS_TIMEOUT_S:.0f} s")
        if spec.deadline and time.time() > spec.deadline + RENDEZVOUS_TIMEOUT_S:
            return


def write_rendezvous(path: str, document: dict) -> None:
    """Writes the rendezvous document (a local path or a gs:// URI) atomically."""
    data = json.dumps(document, sort_keys=True).encode()
    if fileio.is_gcs(path):
        bucket, key = fileio.split_gcs(path)
        fileio.gcs_client().bucket(bucket).blob(key).upload_from_string(data)
    else:
        fileio.write_bytes_atomic(path, data)


def read_rendezvous(path: str) -> dict | None:
    """The rendezvous document, or None while the chief has not written it."""
    try:
        if fileio.is_gcs(path):
            bucket, key = fileio.split_gcs(path)
            blob = fileio.gcs_client().bucket(bucket).blob(key)
            return json.loads(blob.download_as_bytes()) if blob.exists() else None
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def run_pod_worker(rendezvous: str, splits_dir: str, train_dir: str, index: int) -> None:
    """A worker pod: waits for the chief's rendezvous file, then runs trials until done."""
    waited = 0.0
    while True:
        doc = read_rendezvous(rendezvous)
        if doc and doc.get("finished"):
            print(f"search already finished; worker pod {index} has nothing to do", flush=True)
            return
        if doc and "spec" in doc:
            break
        if waited > RENDEZVOUS_TIMEOUT_S:
            raise UserError(
                f"the chief did not publish {rendezvous} within {RENDEZVOUS_TIMEOUT_S:.0f} s"
            )
        time.sleep(5.0)
        waited += 5.0
    spec = SearchSpec(**{**doc["spec"], "splits_dir": splits_dir, "train_dir": train_dir})
    try:
        run_worker(spec, f"pod{index}", doc["address"], threads=0, seed_offset=100 + index)
    except Exception:
        doc = read_rendezvous(rendezvous) or {}
        if doc.get("finished"):
            return  # the chief ended the search while this pod was joining
        raise


def run_worker(
    spec: SearchSpec, tuner_id: str, address: str, threads: int = 0, seed_offset: int = 0
) -> None:
    """Runs trials handed out by the chief oracle at `address` until it says stop."""
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from kerasflow.trainingdata import DataFeed, load_training_arrays
    from kerasflow.tuning import fit_kwargs

    if spec.track:
        import mlflow

        mlflow.set_tracking_uri(spec.tracking_uri)
    # A worker's tuner reads these at every save and search, not only when it is built.
    host, _, port = address.rpartition(":")
    os.environ.update(
        KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port
    )
    keras.utils.set_random_seed(spec.seed + seed_offset)
    feed = DataFeed(load_training_arrays(spec.splits_dir, spec.train_dir), spec.seed)
    tuner = make_tuner(spec, make_hypermodel(spec, feed), tuner_id, address)
    tuner.search(**fit_kwargs(spec, feed.meta))


def main(argv: list[str]) -> int:
    """Entry point of a local worker process: SPEC_PATH TUNER_ID ADDRESS THREADS."""
    spec_path, tuner_id, address, threads = argv
    spec = SearchSpec.from_json(Path(spec_path).read_text())
    index = int("".join(c for c in tuner_id if c.isdigit()) or 0)
    run_worker(spec, tuner_id, address, int(threads), seed_offset=1 + index)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
