"""A warm process that forks a local run's steps with their libraries already imported.

Every step of a local run is a fresh Python process that imports MLflow, its SQLAlchemy store,
pandas and, for four of the seven steps, TensorFlow: seconds per step before any work. While a
`kerasflow run` on the subprocess runner is in flight, one *prefork server* imports them once and
forks a child per step. kfp.local still launches each step as a process (`python -m
kerasflow.runtime.prefork -m kfp.dsl.executor_main ...`): that small client hands its argv,
environment, working folder and standard streams to the server, waits, and exits with the
step's exit status (or dies of the step's signal). Nothing else changes for the step: it runs
`kfp.dsl.executor_main` as `__main__` in the client's folder, with the client's environment
and streams, and is a descendant of the run, so the run's signals reach it.

When no server is running, or it died, or it has not finished its first imports within
READY_WAIT seconds, the client runs the step the normal way (it execs the interpreter).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from typing import NoReturn

from kerasflow.tracking import lifecycle  # standard library only: the client stays light

ENV = "KERASFLOW_PREFORK"
"""`PID:SOCKET_PATH` of the run's prefork server, set by `kerasflow run` while it runs. Set to
`off` before `kerasflow run` to launch every step as a fresh interpreter instead."""

FIRST = (
    "kfp.dsl.executor",
    "mlflow",
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "pandas",
    "pyarrow.parquet",
    "sklearn.model_selection",
    "kerasflow.tracking.runs",
    "kerasflow.tracking.lifecycle",
    "kerasflow.components.ingest_clean.core",
    "kerasflow.components.normalize_split.core",
    "kerasflow.components.augment.core",
)
"""What the data steps need: imported before the server takes its first step."""

THEN = (
    "tensorflow",
    "keras",
    "keras_tuner",
    "kerasflow.components.hyperparameter_search.core",
    "kerasflow.components.train.core",
    "kerasflow.components.evaluate.core",
    "kerasflow.components.deploy.core",
    "kerasflow.components.finalize.core",
)
"""What the model steps need: imported one module at a time while no step is waiting."""

_HEADER = struct.Struct("!I")


# --- client -------------------------------------------------------------------------------


READY_WAIT = 60.0
"""Seconds a step waits for a live server to finish its first imports (the same imports the
step would otherwise make itself, on the same cores) before it starts the normal way."""


def main(argv: list[str]) -> None:
    """Runs `python ARGV` through the prefork server, or as a normal interpreter without one."""
    server = _connect(os.environ.get(ENV, ""))
    if server is None:
        os.execv(sys.executable, [sys.executable, *argv])
    request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
    try:
        socket.send_fds(server, [_HEADER.pack(len(request))], [0, 1, 2])
        server.sendall(request)
    except OSError:  # the server went away before it took the step: nothing has run
        server.close()
        os.execv(sys.executable, [sys.executable, *argv])
    # The step is a descendant of the run, so the run's SIGINT and SIGTERM reach it directly;
    # this process waits for its status instead of dying first.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    reply = _read(server, 8)
    if len(reply) < 8:
        print("kerasflow: the prefork server ended while a step ran", file=sys.stderr)
        os._exit(1)
    kind, value = struct.unpack("!ii", reply)
    if kind == 1:  # killed by a signal: die of the same one, as the step did
        signal.signal(value, signal.SIG_DFL)
        os.kill(os.getpid(), value)
        time.sleep(1)
        os._exit(128 + value)
    os._exit(value)


def _connect(spec: str) -> socket.socket | None:
    """A connection to the server named by `spec`, or None when it is not taking steps."""
    pid, _, path = spec.partition(":")
    if not pid.isdigit() or not path:
        return None
    deadline = time.monotonic() + READY_WAIT
    while not os.path.exists(path):
        if time.monotonic() > deadline or not lifecycle.pid_alive(int(pid)):
            return None
        time.sleep(0.05)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        return None
    return sock


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))  # retried after signals by Python itself (PEP 475)
        if not chunk:
            break
        data += chunk
    return data


# --- server -------------------------------------------------------------------------------


def serve(path: str, parent_fd: int) -> None:
    """The server's loop: preload, listen on `path`, fork a child per request.

    Ends when `parent_fd` (the read end of a pipe whose write end only `kerasflow run` holds)
    reaches end of file, so the server never outlives its run; it exits at once, without the
    seconds of tearing its modules down.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    _preload(FIRST)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # clients connect only once the first imports are done
    pending = list(THEN)
    children: dict[int, socket.socket] = {}
    # A step's status goes to its client as soon as it ends, even while a module is importing;
    # SIGCHLD stays blocked from a fork until its child is in `children`.
    signal.signal(signal.SIGCHLD, lambda *_: _reap(children))
    while True:
        ready, _, _ = select.select([listener, parent_fd], [], [], 0 if pending else None)
        if parent_fd in ready:
            sys.stderr.flush()
            os._exit(0)
        if listener in ready:
            conn, _ = listener.accept()
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
            try:
                pid = _start(conn, [listener, *children.values()], parent_fd)
                if pid:
                    children[pid] = conn
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        elif pending:
            _preload([pending.pop(0)])


def _preload(modules: list[str] | tuple[str, ...]) -> None:
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - the step imports it (and reports) itself
            print(f"prefork: not preloaded {name}: {exc}", file=sys.stderr, flush=True)


def _start(conn: socket.socket, others: list[socket.socket], parent_fd: int) -> int:
    """Forks the step a client asked for; returns its pid (0 when the request was unreadable)."""
    try:
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        (size,) = _HEADER.unpack(header)
        request = json.loads(_read(conn, size))
    except (OSError, ValueError, struct.error):
        conn.close()
        return 0
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    try:
        for sock in (conn, *others):
            sock.close()
        os.close(parent_fd)
        _become_step(request, fds)
    except BaseException:  # noqa: BLE001 - whatever happens, the child never returns here
        import traceback

        traceback.print_exc()
        os._exit(1)


def _become_step(request: dict, fds: list[int]) -> NoReturn:
    """In the forked child: take the client's streams, folder and environment, run its argv."""
    for signum, handler in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGCHLD, signal.SIG_DFL),
    ):
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    env = {k: v for k, v in request["env"].items() if k != ENV}
    os.environ.clear()
    os.environ.update(env)
    _reopen_stdio(env)
    if "numpy" in sys.modules:  # a fresh interpreter seeds NumPy's global generator anew
        sys.modules["numpy"].random.seed()
    argv = request["argv"]
    code = _run(argv)
    _exit(code)


def _reopen_stdio(env: dict[str, str]) -> None:
    """Standard streams as a fresh interpreter would open them on the client's descriptors."""
    import io

    unbuffered = bool(env.get("PYTHONUNBUFFERED"))
    for fd, name in ((1, "stdout"), (2, "stderr")):
        tty = os.isatty(fd)
        raw = io.FileIO(fd, "w", closefd=False)
        buffered = raw if unbuffered else io.BufferedWriter(raw)
        stream = io.TextIOWrapper(
            buffered,
            encoding=getattr(sys, name).encoding,
            errors="backslashreplace" if name == "stderr" else "strict",
            line_buffering=tty or name == "stderr",
            write_through=unbuffered,
        )
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _run(argv: list[str]) -> object:
    """Runs `python ARGV` (`-m MODULE ARGS...`) as `__main__`; returns its exit code."""
    import runpy

    if len(argv) < 2 or argv[0] != "-m":
        print(f"prefork: can only run `-m MODULE ...`, not {argv[:2]}", file=sys.stderr)
        return 2
    sys.argv = [argv[1], *argv[2:]]
    sys.path[0] = os.getcwd()
    try:
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        return exc.code
    except KeyboardInterrupt:
        import traceback

        traceback.print_exc()
        return -signal.SIGINT
    except BaseException:  # noqa: BLE001 - reported as an interpreter would, exit code 1
        import traceback

        traceback.print_exc()
        return 1
    return 0


def _exit(code: object) -> NoReturn:
    """Ends the child as the interpreter would end with `code`: exit handlers, flush, exit."""
    import atexit

    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if status < 0:  # an uncaught KeyboardInterrupt ends the interpreter by SIGINT
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
    os._exit(status & 0xFF)


def _reap(children: dict[int, socket.socket]) -> None:
    """Sends each finished child's status to its client: (0, exit code) or (1, signal)."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is None:
            continue
        if os.WIFSIGNALED(status):
            reply = struct.pack("!ii", 1, os.WTERMSIG(status))
        else:
            reply = struct.pack("!ii", 0, os.waitstatus_to_exitcode(status))
        with contextlib.suppress(OSError):
            conn.sendall(reply)
        conn.close()


# --- the run's side -----------------------------------------------------------------------


@contextlib.contextmanager
def steps_forked(log_path: str) -> Iterator[None]:
    """While open, kfp.local's subprocess runner launches steps through a prefork server.

    The server starts now (its imports overlap with the run's first steps) and writes what it
    has to say (a module it could not preload) to `log_path`; steps that start before it is
    ready run the normal way. On exit the server is ended and kfp.local restored. Does nothing
    when the environment sets KERASFLOW_PREFORK=off.
    """
    if os.environ.get(ENV) == "off":
        yield
        return
    import subprocess
    import tempfile

    from kfp.local import subprocess_task_handler as handler

    # In the system's temporary folder: a socket's path must stay under 108 bytes.
    sock_dir = tempfile.mkdtemp(prefix="kerasflow-prefork-")
    path = os.path.join(sock_dir, "s")
    read_end, write_end = os.pipe()
    with open(log_path, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", __name__, "--serve", path, str(read_end)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            pass_fds=(read_end,),
        )
    os.close(read_end)
    original = handler.replace_python_executable

    def through_server(full_command: list[str], new_executable: str) -> list[str]:
        return original(full_command, f"{new_executable} -m {__name__}")

    previous = os.environ.get(ENV)
    os.environ[ENV] = f"{server.pid}:{path}"
    handler.replace_python_executable = through_server
    try:
        yield
    finally:
        handler.replace_python_executable = original
        if previous is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous
        os.close(write_end)  # the server sees end of file and returns
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        import shutil

        shutil.rmtree(sock_dir, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1:])
