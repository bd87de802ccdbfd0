"""A warm process that forks a local run's steps with their libraries already imported.

Every step of a local run is a fresh Python process that imports MLflow, its SQLAlchemy store,
pandas and, for four of the seven steps, TensorFlow: seconds per step before any work. While a
`kerasflow run` on the subprocess runner is in flight, one *prefork server* imports them once and
forks a child per step. kfp.local still launches each step as a process (`python -m
kerasflow.runtime.prefork -m kfp.dsl.executor_main ...`): that small client hands its argv,
environment, working folder, standard streams and other inherited descriptors to the server,
waits, and exits with the step's exit status (or dies of the step's signal). Nothing else
changes for the step: it runs `kfp.dsl.executor_main` as `__main__` in the client's folder,
with the client's environment and descriptors, and is a descendant of the run, so the run's
signals reach it.

The server takes steps from its start: it imports its modules one at a time and forks a
waiting step between two of them, so a step waits for at most the module in progress and
imports what is still missing itself. When no server is running, or it died, or it does not
take the step within READY_WAIT seconds, the client runs the step the normal way (it execs
the interpreter).

A step forked here can run other Python processes the same way (`python_through_server`):
the search step's multiprocessing fork server is one, with TensorFlow already imported.

The server imports with the garbage collector off (collections took about a fifth of the
import time), and a forked step freezes what it inherited (`gc.freeze`) before it turns the
collector on: the step's full collections then skip the millions of objects of the server's
modules instead of walking them each time.
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
    "matplotlib.pyplot",  # every step but search draws a picture; the backend is its choice
    "kerasflow.tracking.runs",
    "kerasflow.tracking.lifecycle",
    "kerasflow.components.ingest_clean.core",
    "kerasflow.components.normalize_split.core",
    "kerasflow.components.augment.core",
)
"""What the data steps need: imported first, one module at a time."""

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
"""What the model steps need: imported after FIRST, one module at a time."""

_HEADER = struct.Struct("!I")
_GO = b"\x01"
"""The server's answer to a connection it takes: only then does the client send its step."""

MAX_FDS = 64
"""Descriptors one request may carry (its standard streams included); a client that has more
runs its step the normal way."""

_python_through_server: str | None = None


# --- client -------------------------------------------------------------------------------


READY_WAIT = 60.0
"""Seconds a step waits for a live server to take it. The server takes a step between two
imports, so this is the module in progress (the same import the step would otherwise make
itself, on the same cores); only a stuck server makes the step start the normal way."""


def main(argv: list[str]) -> None:
    """Runs `python ARGV` through the prefork server, or as a normal interpreter without one.

    ARGV is `-m MODULE ARGS...` or `-c CODE ARGS...`, after options in OPTIONS; anything else
    runs the normal way.
    """
    fds = _inherited_fds()
    server = None
    command = _without_options(argv)
    if len(command) >= 2 and command[0] in ("-m", "-c") and len(fds) <= MAX_FDS - 3:
        server = _connect(os.environ.get(ENV, ""))
    if server is None:
        os.execv(sys.executable, [sys.executable, *argv])
    request = json.dumps(
        {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "fds": fds}
    ).encode()
    try:
        socket.send_fds(server, [_HEADER.pack(len(request))], [0, 1, 2, *fds])
        server.sendall(request)
    except OSError:  # the server went away before it took the step: nothing has run
        server.close()
        os.execv(sys.executable, [sys.executable, *argv])
    for fd in fds:  # the step holds them now; a pipe's other end sees only the step's copy
        os.close(fd)
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


OPTIONS = ("-B",)
"""Interpreter options a forked step honours (multiprocessing passes the parent's -B along)."""


def _without_options(argv: list[str]) -> list[str]:
    start = 0
    while start < len(argv) and argv[start] in OPTIONS:
        start += 1
    return argv[start:]


def _inherited_fds() -> list[int]:
    """This process's open descriptors above the standard streams, lowest first."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    found = []
    for fd in sorted(int(name) for name in names if name.isdigit() and int(name) > 2):
        try:
            os.fstat(fd)  # the listing's own descriptor is closed by now
        except OSError:
            continue
        found.append(fd)
    return found


def _connect(spec: str) -> socket.socket | None:
    """A connection the server named by `spec` took, or None when it does not take one."""
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
        # Nothing is sent before the server says it takes the step: a client that gives up
        # closes a connection that carries no step, so the step never runs twice.
        sock.settimeout(max(0.0, deadline - time.monotonic()))
        if sock.recv(1) != _GO:  # end of file: the server died
            raise OSError("not taken")
        sock.settimeout(None)
    except OSError:  # refused, timed out or reset
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
    """The server's loop: listen on `path`, import FIRST then THEN, fork a child per request.

    A waiting request is taken between two imports, so a step forked early imports what is
    still missing itself. Ends when `parent_fd` (the read end of a pipe whose write end only
    `kerasflow run` holds) reaches end of file, so the server never outlives its run; it exits
    at once, without the seconds of tearing its modules down.
    """
    global _python_through_server

    import gc

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    # Imports make millions of objects that live as long as the server, and hardly any garbage:
    # collections during them took about a fifth of the import time. On once all are in.
    gc.disable()
    _python_through_server = _write_python(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # a client never connects to a socket not yet listening
    pending = [*FIRST, *THEN]
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
            _preload(pending.pop(0))
            if not pending:
                gc.freeze()
                gc.enable()


def _preload(name: str) -> None:
    import importlib

    try:
        importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - the step imports it (and reports) itself
        print(f"prefork: not preloaded {name}: {exc}", file=sys.stderr, flush=True)


def _write_python(path: str) -> str:
    """Writes the executable `python_through_server` names for the server listening on `path`."""
    import shlex

    python = path + ".python"
    spec = shlex.quote(f"{os.getpid()}:{path}")
    script = (
        f"#!/bin/sh\nexport {ENV}={spec}\n"
        f'exec {shlex.quote(sys.executable)} -m kerasflow.runtime.prefork "$@"\n'
    )
    with open(python + ".tmp", "w") as fh:
        fh.write(script)
    os.chmod(python + ".tmp", 0o755)
    os.rename(python + ".tmp", python)
    return python


def python_through_server() -> str | None:
    """An executable that runs `python -m|-c ... ARGS` as a child of this step's prefork server.

    Set only in a step forked by a prefork server, which lives as long as the step's run; None
    in a fresh interpreter, a container or a pod. The child gets the caller's argv, folder,
    environment and open descriptors (at the same numbers) and the caller's pid stands for it:
    it exits with the child's status. Without a live server it is a normal interpreter.
    """
    return _python_through_server


def _start(conn: socket.socket, others: list[socket.socket], parent_fd: int) -> int:
    """Forks the step a client asked for; returns its pid (0 when the request was unreadable)."""
    fds: list[int] = []
    try:
        conn.settimeout(10.0)  # a live client sends its request at once
        conn.sendall(_GO)
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, MAX_FDS)
        (size,) = _HEADER.unpack(header)
        request = json.loads(_read(conn, size))
        if len(fds) != 3 + len(request.get("fds", [])):
            raise ValueError("descriptors lost")
        conn.settimeout(None)
    except (OSError, ValueError, struct.error):
        for fd in fds:
            os.close(fd)
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
    """In the forked child: take the client's descriptors, folder and environment, run its argv."""
    import gc

    # What the server imported (TensorFlow, MLflow, pandas: millions of objects) lives as long
    # as the step; frozen, the step's full collections no longer walk it (nor touch its pages).
    # The collector is on in the step even when the server was still importing.
    gc.freeze()
    gc.enable()
    for signum, handler in (
        (signal.SIGINT, signal.default_int_handler),
        (signal.SIGTERM, signal.SIG_DFL),
        (signal.SIGCHLD, signal.SIG_DFL),
    ):
        signal.signal(signum, handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
    _place(fds, [0, 1, 2, *request.get("fds", [])])
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


def _place(fds: list[int], targets: list[int]) -> None:
    """Moves each received descriptor to the number it had in the client."""
    import fcntl

    # Above every target first, so that no move closes a descriptor still to be moved.
    floor = max(targets) + 1
    high = [fcntl.fcntl(fd, fcntl.F_DUPFD, floor) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(high, targets, strict=True):
        os.dup2(fd, target)
        os.close(fd)


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
    """Runs `python ARGV` (`-m MODULE ARGS...` or `-c CODE ARGS...`, after OPTIONS) as
    `__main__`; returns its exit code."""
    import runpy
    import types

    command = _without_options(argv)
    if "-B" in argv[: len(argv) - len(command)]:
        sys.dont_write_bytecode = True
    argv = command
    if len(argv) < 2 or argv[0] not in ("-m", "-c"):
        print(f"prefork: can only run `-m` or `-c`, not {argv[:1]}", file=sys.stderr)
        return 2
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *argv[2:]]
            sys.path[0] = ""
            main = sys.modules["__main__"] = types.ModuleType("__main__")
            exec(compile(argv[1], "<string>", "exec"), main.__dict__)
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
    has to say (a module it could not preload) to `log_path`; a step that starts while it
    imports is forked between two imports and imports the rest itself. On exit the server is
    ended and kfp.local restored. Does nothing when the environment sets KERASFLOW_PREFORK=off.
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
        # Served from the importable module: the steps forked here read its state.
        from kerasflow.runtime import prefork

        prefork.serve(sys.argv[2], int(sys.argv[3]))
    else:
        main(sys.argv[1:])
