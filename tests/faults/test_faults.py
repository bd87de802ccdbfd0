"""Faults injected around real `kerasflow run` processes, once per kind of fault.

Each run is the tiny iris run of the harness, started in its own session as a terminal would.
Every fault must end in bounded time with one line, a non-zero exit, nothing deployed, no
process left behind and no MLflow run left RUNNING; a rerun resumes. The gate's own faults (a
registry error, a champion that cannot be loaded) are in tests/e2e/test_gate_and_push.py,
marked `faults` too. benchmarks/faults.py runs every fault at every step.
"""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from kerasflow.tracking import lifecycle
from tests.faults import harness as h

pytestmark = pytest.mark.faults


def sqlite_uri(work: Path) -> str:
    return f"sqlite:///{work / 'mlflow.db'}"


def assert_nothing_left(run: h.Run, tracking_uri: str, serving_dir: Path) -> dict[str, list]:
    """No process of the run, no MLflow run RUNNING, nothing published; returns the runs."""
    assert h.wait_session_gone(run.proc.pid, 30) == []
    statuses = h.runs_by_status(tracking_uri)
    assert "RUNNING" not in statuses, [r.info.run_name for r in statuses["RUNNING"]]
    assert h.published(serving_dir) == []
    return statuses


def kinds(runs: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for run in runs:
        kind = run.data.tags.get("kerasflow.step") or run.data.tags.get("kerasflow.kind")
        out[kind] = out.get(kind, 0) + 1
    return out


def test_ctrl_c_at_the_start_of_the_final_fit_stops_everything(tmp_path):
    run = h.start_run(tmp_path, "--work-dir", "work", *h.LONG_FIT)
    run.wait_for(r"\] train: epoch 1/")
    run.signal(signal.SIGINT, group=True)  # Ctrl-C: the whole foreground process group
    code, _seconds = run.finish(180)
    assert code == 130, run.text()[-3000:]
    last = run.stderr_lines()[-1]
    assert last.startswith("kerasflow: interrupted by SIGINT during train: nothing was deployed")
    assert "evaluate: " not in run.text() and "deploy: " not in run.text()
    statuses = assert_nothing_left(run, sqlite_uri(tmp_path / "work"), tmp_path / "work/models")
    assert kinds(statuses["KILLED"]) == {"pipeline": 1, "train": 1}
    reasons = {r.data.tags.get(lifecycle.TAG_END_REASON, "") for r in statuses["KILLED"]}
    assert any("interrupted by SIGINT" in reason for reason in reasons)


def test_sigterm_to_kerasflow_run_during_the_search_stops_its_steps(tmp_path):
    run = h.start_run(tmp_path, "--work-dir", "work", *h.LONG_SEARCH)
    run.wait_for(r"hyperparameter_search: trial 1/1 ")
    run.signal(signal.SIGTERM)  # to `kerasflow run` alone, as a supervisor would
    code, _seconds = run.finish(180)
    assert code == 143, run.text()[-3000:]
    assert "interrupted by SIGTERM during hyperparameter_search" in run.stderr_lines()[-1]
    statuses = assert_nothing_left(run, sqlite_uri(tmp_path / "work"), tmp_path / "work/models")
    assert kinds(statuses["KILLED"]) == {"pipeline": 1, "hyperparameter_search": 1}


def test_sigkill_leaves_no_process_and_the_orphaned_run_is_reconciled(tmp_path):
    lease = 30
    run = h.start_run(tmp_path, "--work-dir", "work", "--run-lease", str(lease), *h.LONG_SEARCH)
    run.wait_for(r"hyperparameter_search: trial 1/1 ")
    run.signal(signal.SIGKILL)
    code, _seconds = run.finish(30)
    assert code == -signal.SIGKILL
    uri = sqlite_uri(tmp_path / "work")
    early = h.kerasflow(tmp_path, "reconcile", "--work-dir", "work")
    assert "reconciled 0 runs" in early.stdout  # the lease has not expired: left alone
    assert h.wait_session_gone(run.proc.pid, 30) == []  # the step saw its driver go
    statuses = h.runs_by_status(uri)
    assert kinds(statuses["RUNNING"]) == {"pipeline": 1}  # only a lease can tell it is gone
    assert kinds(statuses["KILLED"]) == {"hyperparameter_search": 1}
    beat = float(statuses["RUNNING"][0].data.tags[lifecycle.TAG_HEARTBEAT])
    time.sleep(max(0.0, beat + lease + 1 - time.time()))
    done = h.kerasflow(tmp_path, "reconcile", "--work-dir", "work")
    assert done.returncode == 0, done.stderr
    assert "reconciled 1 runs" in done.stdout and "no heartbeat from" in done.stdout
    statuses = h.runs_by_status(uri)
    assert "RUNNING" not in statuses
    pipeline = [r for r in statuses["KILLED"] if r.data.tags.get("kerasflow.kind") == "pipeline"]
    assert pipeline[0].data.tags[lifecycle.TAG_END_REASON].startswith("reconciled: ")


def test_two_runs_at_once_on_a_new_store_both_publish_distinct_versions(tmp_path):
    runs = [
        h.start_run(tmp_path, "--work-dir", "work", "--summary-json", f"{tag}.json", tag=tag)
        for tag in ("first", "second")
    ]
    for run in runs:
        code, _seconds = run.finish(900)
        assert code == 0, run.text()[-3000:]
    summaries = [json.loads((tmp_path / f"{t}.json").read_text()) for t in ("first", "second")]
    assert sorted(s["model_version"] for s in summaries) == [1, 2]
    assert len({s["mlflow_run_id"] for s in summaries}) == 2
    assert h.published(tmp_path / "work/models") == ["1", "2"]
    statuses = h.runs_by_status(sqlite_uri(tmp_path / "work"))
    assert set(statuses) == {"FINISHED"}
    assert kinds(statuses["FINISHED"])["pipeline"] == 2
    config = (tmp_path / "work/models/models.config").read_text()
    champion = max(summaries, key=lambda s: s["model_version"])["model_version"]
    assert f"versions: {champion}" in config.replace("\n", " ").replace("  ", " ")


def test_a_tracking_outage_stops_the_run_and_a_rerun_resumes_into_a_full_volume(tmp_path):
    why = h.TrackingServer.available()
    if why:
        pytest.skip(why)
    full = tmp_path / "full"
    why = h.tmpfs(full, "32k")
    if why:
        pytest.skip(why)
    server = h.TrackingServer(tmp_path / "server")
    try:
        server.start_database()
        server.start()
        args = ["--work-dir", "work", "--tracking-uri", server.uri, "--max-trials", "2"]
        args += ["--tracking-timeout", "10", "--run-lease", "10"]
        run = h.start_run(tmp_path, *args, tag="outage")
        run.wait_for(r"hyperparameter_search: trial 2/2")
        server.stop()
        code, _seconds = run.finish(300)
        assert code != 0
        last = run.stderr_lines()[-1]
        assert server.uri in last and ("has not answered" in last or "did not answer" in last)
        assert h.wait_session_gone(run.proc.pid, 30) == []
        assert h.published(tmp_path / "work/models") == []

        server.start()
        time.sleep(2)
        rerun = h.start_run(tmp_path, *args, "--serving-dir", str(full), tag="rerun")
        code, _seconds = rerun.finish(600)
        assert code == 2, rerun.text()[-3000:]
        assert re.search(r"resuming: [12] finished trials kept", rerun.text())
        last = rerun.stderr_lines()[-1]
        assert "step deploy failed: no space left on device writing " in last
        assert str(full) in last
        assert h.published(full) == []  # nothing partial is visible to a server
        statuses = h.runs_by_status(server.uri)
        assert "RUNNING" not in statuses
        reconciled = [
            r
            for r in statuses.get("KILLED", [])
            if r.data.tags.get(lifecycle.TAG_END_REASON, "").startswith("reconciled: ")
        ]
        assert kinds(reconciled).get("pipeline") == 1  # the outage's run, whose owner is gone
    finally:
        server.close()
        h.unmount(full)
