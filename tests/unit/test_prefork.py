"""Steps forked from a warm server behave as the interpreter the client replaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerasflow.runtime import prefork

pytestmark = pytest.mark.unit

PROBE = """
import json, os, sys
print(json.dumps({
    "name": __name__,
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "ppid": os.getppid(),
    "x": os.environ.get("PROBE_X"),
    "spec": os.environ.get("KERASFLOW_PREFORK"),
    "warm": "mlflow" in sys.modules,
}), flush=True)
print("to stderr", file=sys.stderr)
what = sys.argv[1] if len(sys.argv) > 1 else ""
if what == "term":
    os.kill(os.getpid(), 15)
if what == "raise":
    raise ValueError("probe failed")
if what == "interrupt":
    raise KeyboardInterrupt
sys.exit(int(what) if what.isdigit() else 0)
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A prefork server (its first imports done) and the spec clients find it by."""
    folder = tmp_path_factory.mktemp("prefork")
    path = str(folder / "s")
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerasflow.runtime.prefork", "--serve", path, str(read_end)],
        pass_fds=(read_end,),
        stdout=subprocess.DEVNULL,
    )
    os.close(read_end)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        assert proc.poll() is None, "the prefork server ended while importing"
        assert time.monotonic() < deadline, "the prefork server was not ready in 120 s"
        time.sleep(0.1)
    yield proc, f"{proc.pid}:{path}", write_end
    if proc.poll() is None:
        os.close(write_end)
        proc.wait(timeout=30)


def client(tmp_path: Path, spec: str | None, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != prefork.ENV}
    env["PROBE_X"] = "from the client"
    if spec is not None:
        env[prefork.ENV] = spec
    return subprocess.run(
        [sys.executable, "-m", "kerasflow.runtime.prefork", "-m", "probe", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def answer(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.splitlines()[0])


def test_a_forked_step_gets_the_clients_argv_folder_environment_and_exit_code(server, tmp_path):
    proc, spec, _ = server
    done = client(tmp_path, spec, "3")
    assert done.returncode == 3, done.stderr
    seen = answer(done)
    assert seen["ppid"] == proc.pid  # forked by the server, with its imports
    assert seen["warm"] is True
    assert seen["name"] == "__main__"
    assert seen["argv"] == [str(tmp_path / "probe.py"), "3"]
    assert seen["cwd"] == str(tmp_path)
    assert seen["x"] == "from the client"
    assert seen["spec"] is None  # the step does not see the server
    assert done.stderr.strip() == "to stderr"


def test_a_step_killed_by_a_signal_kills_its_client_with_the_same_signal(server, tmp_path):
    done = client(tmp_path, server[1], "term")
    assert done.returncode == -signal.SIGTERM


def test_an_uncaught_error_prints_its_traceback_and_exits_1(server, tmp_path):
    done = client(tmp_path, server[1], "raise")
    assert done.returncode == 1
    assert "ValueError: probe failed" in done.stderr


def test_an_uncaught_keyboard_interrupt_ends_the_step_by_sigint(server, tmp_path):
    done = client(tmp_path, server[1], "interrupt")
    assert done.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in done.stderr


def test_without_a_server_the_client_runs_the_step_itself(tmp_path):
    for spec in (None, "off"):
        done = client(tmp_path, spec, "0")
        assert done.returncode == 0, done.stderr
        seen = answer(done)
        assert seen["ppid"] == os.getpid()  # the client became the step
        assert seen["warm"] is False
        assert seen["argv"] == [str(tmp_path / "probe.py"), "0"]


def test_a_dead_servers_spec_is_not_waited_for(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = client(tmp_path, f"{gone.pid}:{tmp_path / 's'}", "0")
    assert done.returncode == 0
    assert answer(done)["ppid"] == os.getpid()


def test_the_server_ends_when_the_run_closes_its_pipe(server, tmp_path):
    proc, _, write_end = server
    assert proc.poll() is None
    os.close(write_end)
    assert proc.wait(timeout=60) == 0
