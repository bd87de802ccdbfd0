"""Trials in their own processes, in parallel on request, through KerasTuner's distributed mode.

The step process is the chief: it serves its oracle (KerasTuner's own OracleServicer) over
gRPC and runs trials in worker processes, each a KerasTuner worker (the KERASTUNER_* variables
set) that asks the chief for a trial, runs it and reports back. Workers are forked from a
server process that imported TensorFlow once, so a new worker starts in milliseconds; each one
runs a few trials and exits, and the next one takes over. That keeps memory flat over long
searches (TensorFlow keeps a little of every model it traced for as long as the process lives),
and a trial that kills its process (out of memory) is retried once and then recorded as failed
while the search goes on. `--tuner-workers N` keeps N such workers running at once.

On a cluster the workers can also be pods: the chief then listens on its pod address and
writes a rendezvous file under the pipeline root (`address`, the search spec, and `finished`
once it is done); each worker pod polls that file, joins, and leaves when the search is over.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kerasflow.runtime import boundary, fileio
from kerasflow.runtime.errors import UserError
from kerasflow.tuning.tuners import (
    CHIEF_ID,
    SearchOutcome,
    SearchSpec,
    finished_trials,
    make_hypermodel,
    make_tuner,
    outcome,
    trial_record,
    write_trial_record,
)

POLL_S = 0.1
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
    from kerasflow.data.feeds import FixedFeed

    return FixedFeed(meta, None, None)


PRELOAD = [
    "tensorflow",
    "keras",
    "keras_tuner",
    "mlflow",
    "kerasflow.modeling.hypermodel",
    "kerasflow.data.feeds",
    "kerasflow.tuning.tuners",
    "kerasflow.tuning.parallel",
]
"""What the fork server imports once, so that forked workers start without importing."""

DONE_EXIT = 3
"""A worker's exit code when the oracle said the search is over (0: its trial quota is used)."""

MAX_CRASHES = 2
"""Times a trial may take its worker process down before it is recorded as failed."""


def process_context() -> Any:
    """The multiprocessing context whose fork server has TensorFlow imported.

    In a step forked by a local run's prefork server, the fork server (and the resource
    tracker) are forked by that server too, which has TensorFlow imported already, instead of
    starting as fresh interpreters; elsewhere they are fresh interpreters.
    """
    import multiprocessing

    from kerasflow.runtime import prefork

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    python = prefork.python_through_server()
    # The executable is a script in the server's temporary folder: on a noexec mount it
    # cannot run, and the fork server starts as a fresh interpreter instead.
    if python and os.access(python, os.X_OK):
        ctx.set_executable(python)  # what multiprocessing starts its helper processes with
    return ctx


def warm_forkserver() -> None:
    """Starts the fork server now, so its imports overlap with the step's own."""
    from multiprocessing import forkserver

    process_context()
    forkserver.ensure_running()


def stop_forkserver() -> None:
    """Ends the fork server once no worker needs it. Left alone it outlives the step by the
    seconds TensorFlow's teardown takes, and the step's output stays open until it is gone.
    The next search starts a fresh one."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    # Closes the pipe whose end of file ends a fork server, and reaps `pid`. Started through
    # a prefork server, `pid` is only the client standing for the fork server: this ends it.
    server._stop()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _exit_with(chief_pid: int) -> None:
    """Ends this worker as soon as the chief is gone (the fork server outlives it)."""
    import threading

    def watch() -> None:
        while _alive(chief_pid):
            time.sleep(POLL_S)
        os._exit(1)

    if Path(f"/proc/{chief_pid}").exists():
        threading.Thread(target=watch, name="chief-watch", daemon=True).start()


def _worker_process(
    *,
    spec_json: str,
    tuner_id: str,
    address: str,
    threads: int,
    quota: int,
    seed_offset: int,
    chief_pid: int,
    records: Any,
) -> None:
    """Body of a forked worker: run up to `quota` trials, exit DONE_EXIT when the search is over."""
    _exit_with(chief_pid)
    spec = SearchSpec.from_json(spec_json)
    over = run_worker(
        spec,
        tuner_id,
        address,
        threads=threads,
        seed_offset=seed_offset,
        quota=quota,
        record_sink=records.put,
    )
    records.close()
    records.join_thread()  # every trial record has reached the chief
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is reported; skipping TensorFlow's teardown lets the next worker start sooner.
    os._exit(DONE_EXIT if over else 0)


@contextlib.contextmanager
def _no_main_module() -> Iterator[None]:
    # A forked worker would otherwise import the parent's __main__ first, and a script without
    # an `if __name__ == "__main__"` guard would start all over again in every worker.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class RecordWriter:
    """Writes the trial records workers send as MLflow runs, from one thread of the chief."""

    def __init__(self, ctx: Any, spec: SearchSpec) -> None:
        import threading

        self.queue = ctx.Queue()
        self.spec = spec
        self._thread = threading.Thread(target=self._run, name="trial-records", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        client, experiment = None, ""
        while True:
            record = self.queue.get()
            if record is None:
                return
            if not (self.spec.track and self.spec.parent_run_id):
                continue
            try:
                if client is None:
                    import mlflow

                    client = mlflow.MlflowClient(self.spec.tracking_uri)
                    experiment = client.get_run(self.spec.parent_run_id).info.experiment_id
                write_trial_record(client, experiment, self.spec.parent_run_id, record)
            except Exception as exc:  # tracking must not end the search
                boundary.progress(self.spec.step_name, f"could not record a trial: {exc}")

    def close(self) -> None:
        """Writes what is queued, then stops the thread."""
        self.queue.put(None)
        self._thread.join()


def trials_left(oracle: Any) -> bool:
    """False when the oracle will hand out no further trial: its budget or failure limit
    stopped the search, or every trial of `max_trials` was handed out and none waits for a
    retry. True otherwise (also when only asking would tell, as with Hyperband's brackets)."""
    if getattr(oracle, "stop_reason", ""):
        return False
    deadline = getattr(oracle, "deadline", 0.0)
    if deadline and time.time() >= deadline:
        return False
    max_trials = getattr(oracle, "max_trials", None)
    return not (max_trials and len(oracle.trials) >= max_trials and not oracle._retry_queue)


class WorkerSlot:
    """One worker at a time under a fixed tuner id: restarted after its quota or a crash."""

    def __init__(self, index: int, ctx: Any, args: tuple) -> None:
        self.index = index
        self.tuner_id = f"worker{index}"
        self.ctx = ctx
        self.args = args
        self.proc: Any = None
        self.generation = 0
        self.crashes: dict[str, int] = {}
        self.failures_in_row = 0
        self.done = False

    def start(self) -> None:
        spec_json, address, threads, quota, records = self.args
        seed_offset = 1 + self.index + 7919 * self.generation
        self.proc = self.ctx.Process(
            target=_worker_process,
            kwargs={
                "spec_json": spec_json,
                "tuner_id": self.tuner_id,
                "address": address,
                "threads": threads,
                "quota": quota,
                "seed_offset": seed_offset,
                "chief_pid": os.getpid(),
                "records": records,
            },
            daemon=True,
        )
        with _no_main_module():
            self.proc.start()
        self.generation += 1

    def poll(self, oracle: Any, step: str) -> None:
        """Restarts a worker that used its quota or crashed; notes one that saw the end."""
        if self.done or self.proc is None or self.proc.exitcode is None:
            return
        code = self.proc.exitcode
        if code == DONE_EXIT:
            self.done = True
            return
        if code == 0:
            self.failures_in_row = 0
            if not trials_left(oracle):
                # A fresh process would only learn that the search is over, while the last
                # trials still running elsewhere need the cores.
                self.done = True
                return
        else:
            self.failures_in_row += 1
            self._record_crash(oracle, code, step)
            if self.failures_in_row > MAX_CRASHES + 1:
                boundary.progress(
                    step, f"{self.tuner_id} keeps failing (exit code {code}); stopped"
                )
                self.done = True
                return
        self.start()

    def _record_crash(self, oracle: Any, code: int, step: str) -> None:
        trial = oracle.ongoing_trials.get(self.tuner_id)
        if trial is None:
            boundary.progress(step, f"{self.tuner_id} exited with code {code}; restarting it")
            return
        count = self.crashes[trial.trial_id] = self.crashes.get(trial.trial_id, 0) + 1
        why = f"the trial's process died (exit code {code}, e.g. out of memory)"
        spec = SearchSpec.from_json(self.args[0])
        self.args[4].put(
            trial_record(
                trial.trial_id,
                tuner_id=self.tuner_id,
                values=trial.hyperparameters.values,
                rows=[],
                status="FAILED",
                error=f"WorkerDied: {why}",
                duration=0.0,
                best=None,
                objective=spec.objective,
                start_ms=int(time.time() * 1000),
            )
        )
        if count < MAX_CRASHES:
            boundary.progress(step, f"trial {trial.trial_id}: {why}; running it again")
            return
        boundary.progress(step, f"trial {trial.trial_id}: {why} again; recorded as failed")
        trial.status = "FAILED"
        trial.message = f"WorkerDied: {why}"
        oracle.end_trial(trial)


def run_parallel_search(
    spec: SearchSpec,
    meta: dict,
    workers: int,
    pods: int = 0,
    rendezvous: str = "",
    trials_per_process: int = 5,
) -> SearchOutcome:
    """Runs the search as a chief oracle with `workers` worker processes at a time.

    Args:
        spec: the search; `spec.tuner_dir` holds the trials (and resumes them).
        meta: the bundle metadata (the chief builds models only to learn the space).
        workers: worker processes running at once on loopback (0 with pods only).
        pods: worker pods expected to join through `rendezvous` (cluster fan-out).
        rendezvous: where the chief publishes its address for worker pods.
        trials_per_process: trials a worker process runs before a fresh one takes over
            (0: no limit).

    Raises:
        UserError: when no trial finished.
    """
    import keras

    ctx = process_context()
    keras.utils.set_random_seed(spec.seed)
    port = free_port()
    host = "127.0.0.1" if not pods else socket.gethostbyname(socket.gethostname())
    address = f"{host}:{port}"
    tuner = make_tuner(spec, make_hypermodel(spec, _meta_feed(meta)), CHIEF_ID, address)
    tuner.save()
    oracle = tuner.oracle
    kept = finished_trials(oracle)
    if kept:
        boundary.progress(spec.step_name, f"resuming: {kept} finished trials kept")
    server, servicer = serve_oracle(oracle, f"{'0.0.0.0' if pods else host}:{port}")
    threads = 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)
    writer = RecordWriter(ctx, spec)
    args = (spec.to_json(), address, threads, max(0, int(trials_per_process)), writer.queue)
    slots = [WorkerSlot(i, ctx, args) for i in range(workers)]
    if pods:
        write_rendezvous(
            rendezvous, {"address": address, "spec": json.loads(spec.to_json()), "finished": False}
        )
    try:
        if workers > 1 or pods:
            boundary.progress(
                spec.step_name,
                f"chief oracle at {address}: {workers} workers"
                + (f" and {pods} worker pods" if pods else ""),
            )
        for slot in slots:
            slot.start()
        _wait(slots, oracle, servicer, pods, spec)
    finally:
        for slot in slots:
            if slot.proc is not None and slot.proc.exitcode is None:
                slot.proc.kill()
                slot.proc.join()
        server.stop(grace=None)
        writer.close()
        stop_forkserver()
        if pods:
            write_rendezvous(rendezvous, {"address": address, "finished": True})
    return outcome(oracle, kept)


def _wait(slots: list, oracle: Any, servicer: Any, pods: int, spec: SearchSpec) -> None:
    """Returns when every local worker saw the end and, with pods, the oracle is done."""
    started = time.time()
    while True:
        time.sleep(POLL_S)
        for slot in slots:
            slot.poll(oracle, spec.step_name)
        local_done = all(slot.done for slot in slots)
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
    """Writes the rendezvous document (a local path or an object-store URI) atomically."""
    fileio.write_bytes_atomic(path, json.dumps(document, sort_keys=True).encode())


def read_rendezvous(path: str) -> dict | None:
    """The rendezvous document, or None while the chief has not written it."""
    try:
        return json.loads(fileio.read_bytes(path))
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
    spec: SearchSpec,
    tuner_id: str,
    address: str,
    *,
    threads: int = 0,
    seed_offset: int = 0,
    quota: int = 0,
    record_sink: Any = None,
) -> bool:
    """Runs trials handed out by the chief oracle at `address`.

    Trial records go to `record_sink` (the chief writes them) or, without one, straight to the
    tracking store (worker pods).

    Returns:
        True when the oracle ended the search, False when `quota` trials were run first.
    """
    import keras
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    from kerasflow.data.feeds import open_feed
    from kerasflow.tuning.tuners import TrialQuotaReached, fit_kwargs, long_lived_objects_frozen

    if spec.track and record_sink is None:
        import mlflow

        mlflow.set_tracking_uri(spec.tracking_uri)
    # A worker's tuner reads these at every save and search, not only when it is built.
    host, _, port = address.rpartition(":")
    os.environ.update(
        KERASTUNER_TUNER_ID=tuner_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port
    )
    keras.utils.set_random_seed(spec.seed + seed_offset)
    feed = open_feed(spec.splits_dir, spec.train_dir, spec.seed, spec.stream_rows)
    tuner = make_tuner(spec, make_hypermodel(spec, feed), tuner_id, address)
    tuner.trial_quota = quota
    tuner.record_sink = record_sink
    try:
        with long_lived_objects_frozen():
            tuner.search(**fit_kwargs(spec, feed.meta))
    except TrialQuotaReached:
        return False
    return True
