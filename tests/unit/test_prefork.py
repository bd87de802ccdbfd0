"""Steps forked from a warm server behave as the interpreter the client replaces."""

from __future__ import annotations

import contextlib
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
import gc, json, os, sys
print(json.dumps({
    "name": __name__,
    "argv": sys.argv,
    "cwd": os.getcwd(),
    "ppid": os.getppid(),
    "x": os.environ.get("PROBE_X"),
    "spec": os.environ.get("KERASFLOW_PREFORK"),
    "warm": "mlflow" in sys.modules,
    "frozen": gc.get_freeze_count(),
    "collecting": gc.isenabled(),
    "loaded": [m for m in os.environ.get("PROBE_WATCH", "").split(",") if m in sys.modules],
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


def start_server(folder: Path, code: str = "", env: dict | None = None):
    """A prefork server listening in `folder` (after running `code` in it) and its pipe."""
    path = str(folder / "s")
    read_end, write_end = os.pipe()
    argv = ["-m", "kerasflow.runtime.prefork", "--serve", path, str(read_end)]  # as a run does
    if code:
        argv = [
            "-c",
            f"from kerasflow.runtime import prefork as p; {code}; p.serve({path!r}, {read_end})",
        ]
    proc = subprocess.Popen(
        [sys.executable, *argv],
        pass_fds=(read_end,),
        stdout=subprocess.DEVNULL,
        env=env,
    )
    os.close(read_end)
    return proc, f"{proc.pid}:{path}", write_end


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A prefork server (its first imports done) and the spec clients find it by."""
    proc, spec, write_end = start_server(tmp_path_factory.mktemp("prefork"))
    folder = tmp_path_factory.mktemp("warming")
    deadline = time.monotonic() + 180
    while True:  # steps are taken from the start; these wait until FIRST is imported
        assert proc.poll() is None, "the prefork server ended while importing"
        assert time.monotonic() < deadline, "the prefork server did not import FIRST in 180 s"
        done = client(folder, spec, watch=prefork.FIRST)
        assert done.returncode == 0, done.stderr
        if len(answer(done)["loaded"]) == len(prefork.FIRST):
            break
        time.sleep(0.5)
    yield proc, spec, write_end
    if proc.poll() is None:
        os.close(write_end)
        proc.wait(timeout=30)


def client(
    tmp_path: Path, spec: str | None, *args: str, watch: tuple = (), wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    (tmp_path / "probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != prefork.ENV}
    env["PROBE_X"] = "from the client"
    env["PROBE_WATCH"] = ",".join(watch)
    if spec is not None:
        env[prefork.ENV] = spec
    argv = [sys.executable, "-m", "kerasflow.runtime.prefork", "-m", "probe", *args]
    if not wait:
        return subprocess.Popen(
            argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def answer(done: subprocess.CompletedProcess) -> dict:
    return json.loads(done.stdout.splitlines()[0])


def test_a_forked_step_gets_the_clients_argv_folder_environment_and_exit_code(server, tmp_path):
    proc, spec, _ = server
    done = client(tmp_path, spec, "3")
    assert done.returncode == 3, done.stderr
    seen = answer(done)
    assert seen["ppid"] == proc.pid  # forked by the server, with its imports
    assert seen["warm"] is True
    assert seen["frozen"] > 100_000  # the server's objects are out of the collector's reach
    assert seen["collecting"] is True
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
        assert seen["frozen"] == 0
        assert seen["argv"] == [str(tmp_path / "probe.py"), "0"]


def test_a_dead_servers_spec_is_not_waited_for(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    done = client(tmp_path, f"{gone.pid}:{tmp_path / 's'}", "0")
    assert done.returncode == 0
    assert answer(done)["ppid"] == os.getpid()


# --- steps taken while the server imports -----------------------------------------------------

GATE = """
import os, time
while not os.path.exists(os.environ["GATE_FILE"]):
    time.sleep(0.05)
"""


@pytest.fixture
def gated_server(tmp_path):
    """A server whose only FIRST import lasts until the test opens its gate (a file)."""
    (tmp_path / "gates").mkdir()
    (tmp_path / "gates" / "probe_gate.py").write_text(GATE)
    gate = tmp_path / "gate-open"
    env = dict(os.environ, GATE_FILE=str(gate))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "gates"), env.get("PYTHONPATH", "")])
    proc, spec, write_end = start_server(
        tmp_path, "p.FIRST = ('probe_gate',); p.THEN = ('colorsys',)", env
    )
    yield proc, spec, gate
    proc.kill()
    proc.wait()
    os.close(write_end)


def connected(pid: int) -> bool:
    """Whether process `pid` holds a connected Unix socket (taken by its server or not)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:["):
                inodes.add(link[len("socket:[") : -1])
    for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[6] in inodes and fields[5] == "03":
            return True
    return False


def wait_connected(step: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while not connected(step.pid):
        assert step.poll() is None, step.communicate()
        assert time.monotonic() < deadline, "the client did not connect while the server imported"
        time.sleep(0.05)


def test_a_step_that_arrives_during_the_imports_is_forked_before_the_next_one(
    gated_server, tmp_path
):
    proc, spec, gate = gated_server
    step = client(tmp_path, spec, "0", watch=("probe_gate", "colorsys"), wait=False)
    wait_connected(step)  # while the server is still in its first import
    gate.touch()
    out, err = step.communicate(timeout=120)
    assert step.returncode == 0, err
    seen = json.loads(out.splitlines()[0])
    assert seen["ppid"] == proc.pid  # forked by the server, not waiting for all its imports
    assert seen["loaded"] == ["probe_gate"]  # the module in progress, not the next one
    assert seen["collecting"] is True  # the server imports without collecting; the step does


def test_a_step_waiting_for_a_server_that_dies_runs_the_normal_way(gated_server, tmp_path):
    proc, spec, _ = gated_server
    step = client(tmp_path, spec, "0", watch=("probe_gate",), wait=False)
    wait_connected(step)
    proc.kill()
    out, err = step.communicate(timeout=120)
    assert step.returncode == 0, err
    seen = json.loads(out.splitlines()[0])
    assert seen["ppid"] == os.getpid()  # the client became the step
    assert seen["loaded"] == []


# --- other Python processes through the server -------------------------------------------------


def test_a_c_step_gets_its_clients_other_descriptors_at_the_same_numbers(server, tmp_path):
    proc, spec, _ = server
    read_end, write_end = os.pipe()
    number = 47
    os.dup2(write_end, number)
    os.close(write_end)
    code = f"import os, sys; os.write({number}, f'{{os.getppid()}} {{sys.argv}}'.encode())"
    env = dict(os.environ, **{prefork.ENV: spec})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "kerasflow.runtime.prefork", "-c", code, "an", "arg"],
            cwd=tmp_path,
            env=env,
            pass_fds=(number,),
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(number)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read().decode()
    assert done.returncode == 0, done.stderr
    assert written == f"{proc.pid} ['-c', 'an', 'arg']"


FORK_SERVER_PROBE = """
import json, os, time
from multiprocessing import forkserver
from kerasflow.tuning import parallel
from probe_report import report


def parent_of(pid):
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[1])

if __name__ == "__main__":  # a worker imports this module again
    ctx = parallel.process_context()
    queue = ctx.Queue()
    worker = ctx.Process(target=report, args=(queue,))
    worker.start()
    fork_server = queue.get(timeout=120)
    worker.join()
    started = forkserver._forkserver._forkserver_pid
    seen = {"step": os.getpid(), "started": started, "fork_server": fork_server,
            "fork_server_parent": parent_of(fork_server)}
    parallel.stop_forkserver()
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{fork_server}") and time.monotonic() < deadline:
        time.sleep(0.05)
    seen["fork_server_ended"] = not os.path.exists(f"/proc/{fork_server}")
    print(json.dumps(seen), flush=True)
"""


def search_like_step(tmp_path: Path, spec: str | None) -> dict:
    """Runs a step that starts a worker the way the search step does; what it saw."""
    (tmp_path / "probe_search.py").write_text(FORK_SERVER_PROBE)
    (tmp_path / "probe_report.py").write_text("import os\ndef report(q): q.put(os.getppid())\n")
    env = {k: v for k, v in os.environ.items() if k != prefork.ENV}
    if spec is not None:
        env[prefork.ENV] = spec
    done = subprocess.run(
        [sys.executable, "-m", "kerasflow.runtime.prefork", "-m", "probe_search"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            if entry.isdigit() and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


def test_a_steps_fork_server_is_forked_by_the_prefork_server_and_ends_with_the_step(
    server, tmp_path
):
    proc, spec, _ = server
    seen = search_like_step(tmp_path, spec)
    assert seen["fork_server_parent"] == proc.pid  # not a fresh interpreter under the step
    assert seen["started"] != seen["fork_server"]  # the step's child is its client
    assert seen["fork_server_ended"]  # stop_forkserver ends it, not just its client
    deadline = time.monotonic() + 60
    while children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert children_of(proc.pid) == []  # nothing of the step is left under the server


def test_without_a_server_a_steps_fork_server_is_a_fresh_interpreter(tmp_path):
    seen = search_like_step(tmp_path, None)
    assert seen["fork_server_parent"] == seen["step"]
    assert seen["started"] == seen["fork_server"]
    assert seen["fork_server_ended"]


def test_the_server_ends_when_the_run_closes_its_pipe(server, tmp_path):
    # Last of the tests that share the server.
    proc, _, write_end = server
    assert proc.poll() is None
    os.close(write_end)
    assert proc.wait(timeout=60) == 0


def test_a_server_executable_that_cannot_run_leaves_the_fork_server_a_fresh_interpreter(
    tmp_path, monkeypatch
):
    # As on a noexec /tmp: the script is there but may not be executed.
    from multiprocessing import spawn

    from kerasflow.tuning import parallel

    script = tmp_path / "python"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o644)
    monkeypatch.setattr(prefork, "python_through_server", lambda: str(script))
    before = spawn.get_executable()
    monkeypatch.setattr(spawn, "_python_exe", before)  # put back whatever the call sets
    parallel.process_context()
    assert spawn.get_executable() == before
