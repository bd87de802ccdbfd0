"""Fault injection around real `kerasflow run` processes, shared by the faults tier and
benchmarks/faults.py: start a run in its own session, wait for a step, inject a fault, and
read back what the user and the stores were left with."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TINY_RUN = [
    "--data",
    "builtin:iris",
    "--tuner",
    "random",
    "--max-trials",
    "1",
    "--max-epochs",
    "2",
    "--final-epochs",
    "2",
    "--threshold",
    "accuracy=0.1",
]
"""The smallest real run: every step does its job on iris in about a minute."""

LONG_SEARCH = ["--max-epochs", "5000", "--patience", "5000"]
"""Appended to TINY_RUN: a trial that outlasts any signal a test sends during the search (a
two-epoch trial can end before a loaded machine delivers it)."""

LONG_FIT = ["--final-epochs", "5000", "--patience", "5000"]
"""Appended to TINY_RUN: a final fit that outlasts any signal a test sends during it."""

STEPS = (
    "ingest_clean",
    "normalize_split",
    "augment",
    "hyperparameter_search",
    "train",
    "evaluate",
    "deploy",
)


def step_started(step: str) -> str:
    """The console pattern of a step's first progress line."""
    return rf"\] {step}: "


@dataclass
class Run:
    """A `kerasflow run` process started in its own session (as a terminal would)."""

    proc: subprocess.Popen
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def stderr_lines(self) -> list[str]:
        return [line for line in self.err.read_text(errors="replace").splitlines() if line]

    def wait_for(self, pattern: str, timeout: float = 300) -> float:
        """Seconds since start when `pattern` appeared in the output (fails if the run ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.text()):
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"run ended (exit {self.proc.returncode}) before {pattern!r}:\n"
                    + self.text()[-4000:]
                )
            time.sleep(0.2)
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n" + self.text()[-4000:])

    def finish(self, timeout: float = 600) -> tuple[int, float]:
        """(exit code, seconds from now until the process ended)."""
        began = time.monotonic()
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.proc.pid)
            raise AssertionError(
                f"run still going after {timeout} s:\n" + self.text()[-4000:]
            ) from None
        return code, time.monotonic() - began

    def signal(self, signum: int, group: bool = False) -> None:
        if group:
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)


def start_run(cwd: Path, *args: str, env: dict[str, str] | None = None, tag: str = "run") -> Run:
    """Starts `kerasflow run TINY_RUN ARGS` in `cwd`, its own process group and session."""
    out, err = cwd / f"{tag}.out", cwd / f"{tag}.err"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerasflow.pipelines.cli", "run", *TINY_RUN, *args],
        cwd=cwd,
        stdout=out.open("w"),
        stderr=err.open("w"),
        start_new_session=True,
        env={**user_environment(), **(env or {})},
    )
    return Run(proc, out, err)


def user_environment() -> dict[str, str]:
    """This environment less what the test suite sets for itself (its MLflow store)."""
    return {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}


def kerasflow(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Any other `kerasflow` command, run to completion."""
    return subprocess.run(
        [sys.executable, "-m", "kerasflow.pipelines.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=user_environment(),
    )


def session_processes(sid: int) -> list[int]:
    """Live processes of session `sid` (a run started with start_run has sid == its pid)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            found.append(int(entry))
    return found


def wait_session_gone(sid: int, timeout: float = 30) -> list[int]:
    """Waits until no process of the session is left; returns those still alive."""
    deadline = time.monotonic() + timeout
    left = session_processes(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = session_processes(sid)
    return left


def kill_session(sid: int) -> None:
    for pid in session_processes(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def runs_by_status(tracking_uri: str, experiment: str = "kerasflow") -> dict[str, list]:
    """The experiment's runs grouped by status."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    out: dict[str, list] = {}
    if exp is None:
        return out
    for run in client.search_runs([exp.experiment_id], max_results=5000):
        out.setdefault(run.info.status, []).append(run)
    return out


def published(serving_dir: Path, model: str = "kerasflow-model") -> list[str]:
    """Every entry of the model's serving folder, hidden temporaries included."""
    base = serving_dir / model
    return sorted(p.name for p in base.iterdir()) if base.is_dir() else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """A real `mlflow server` on a PostgreSQL database, both on loopback, that can be stopped.

    PostgreSQL refuses to run as root, so as root its files belong to the `postgres` user.
    """

    def __init__(self, root: Path) -> None:
        import tempfile

        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.pg_port, self.port = free_port(), free_port()
        # Outside `root`: the postgres user must reach it, and test folders are root's alone.
        self.pg_root = Path(tempfile.mkdtemp(prefix="kerasflow-pg-"))
        self.data = self.pg_root / "data"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def available() -> str:
        """Why the server cannot run here ("" when it can)."""
        if not shutil.which("initdb") or not shutil.which("pg_ctl"):
            return "PostgreSQL (initdb, pg_ctl) is not installed"
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return "psycopg is not installed (pip install 'psycopg[binary]')"
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no 'postgres' user to run PostgreSQL"
        return ""

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _as_postgres(self, command: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return command
        return ["runuser", "-u", "postgres", "--", *command]

    def start_database(self) -> None:
        self.data.mkdir(parents=True)
        sock = self.pg_root / "sock"
        sock.mkdir()
        if os.geteuid() == 0:
            for path in (self.pg_root, self.data, sock):
                shutil.chown(path, "postgres")
        run = lambda cmd: subprocess.run(  # noqa: E731
            self._as_postgres(cmd), check=True, capture_output=True, text=True, timeout=120
        )
        run(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        run(
            [
                "pg_ctl",
                "-D",
                str(self.data),
                "-w",
                "-l",
                str(self.data / "server.log"),
                "-o",
                f"-p {self.pg_port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        )
        run(["createdb", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "postgres", "mlflow"])

    def start(self, timeout: float = 120) -> None:
        """Starts (or restarts) `mlflow server` and waits until it answers."""
        log = (self.root / "mlflow-server.log").open("a")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"postgresql://postgres@127.0.0.1:{self.pg_port}/mlflow",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.uri}/health", timeout=2) as reply,
            ):
                if reply.status == 200:
                    return
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError(
            "mlflow server did not start:\n" + (self.root / "mlflow-server.log").read_text()[-3000:]
        )

    def stop(self) -> None:
        """Stops `mlflow server` (every process of it) as an outage would."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
            self.proc = None

    def close(self) -> None:
        self.stop()
        if self.data.exists():
            subprocess.run(
                self._as_postgres(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(self.pg_root, ignore_errors=True)


def tmpfs(path: Path, size: str = "400k") -> str:
    """Mounts a small tmpfs at `path`; returns why it could not ("" when mounted)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    return "" if done.returncode == 0 else f"mount failed: {done.stderr.strip()}"


def unmount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)
