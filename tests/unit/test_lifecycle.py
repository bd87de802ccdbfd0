"""The run lifecycle: ending a pipeline's runs, reconciling orphans by lease, the step boundary's
interrupt, stop-file and full-disk handling, and the locks and atomic publishes under it."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import mlflow
import pytest

from kerasflow import constants as C
from kerasflow.runtime import boundary, fileio
from kerasflow.runtime.errors import UserError
from kerasflow.settings import RunSettings
from kerasflow.tracking import lifecycle

pytestmark = pytest.mark.unit


@pytest.fixture
def client(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    lifecycle.prepare_store(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def open_run(client, exp, kind, *, parent="", beat_age=0.0, lease=30.0, name="r"):
    tags = {
        C.TAG_KIND: kind,
        lifecycle.TAG_HEARTBEAT: f"{time.time() - beat_age:.0f}",
        lifecycle.TAG_LEASE: f"{lease:.0f}",
        lifecycle.TAG_OWNER: "host:1",
    }
    if parent:
        tags["mlflow.parentRunId"] = parent
    return client.create_run(exp, run_name=name, tags=tags).info.run_id


def status(client, run_id):
    return client.get_run(run_id).info.status


def test_reconcile_ends_only_runs_whose_lease_expired_and_what_they_hold(client):
    exp = client.create_experiment("e")
    dead = open_run(client, exp, C.KIND_PIPELINE, beat_age=100, name="dead")
    dead_step = open_run(client, exp, C.KIND_STEP, parent=dead, beat_age=100, name="train")
    trial = open_run(client, exp, C.KIND_TRIAL, parent=dead_step, name="trial-1")
    live = open_run(client, exp, C.KIND_PIPELINE, beat_age=5, name="live")
    live_step = open_run(client, exp, C.KIND_STEP, parent=live, beat_age=5, name="search")
    ended = lifecycle.reconcile(client, exp)
    assert {e.run_id for e in ended} == {dead, dead_step, trial}
    assert {status(client, r) for r in (dead, dead_step, trial)} == {"KILLED"}
    assert status(client, live) == status(client, live_step) == "RUNNING"
    reason = client.get_run(dead).data.tags[lifecycle.TAG_END_REASON]
    assert reason.startswith("reconciled: no heartbeat from host:1 for ")
    assert lifecycle.reconcile(client, exp) == []  # nothing twice


def test_a_run_without_heartbeat_counts_from_its_start(client):
    exp = client.create_experiment("e")
    old = client.create_run(
        exp, start_time=int((time.time() - 2000) * 1000), tags={C.TAG_KIND: C.KIND_PIPELINE}
    ).info.run_id
    new = client.create_run(exp, tags={C.TAG_KIND: C.KIND_PIPELINE}).info.run_id
    assert [e.run_id for e in lifecycle.reconcile(client, exp)] == [old]
    assert status(client, new) == "RUNNING"


def test_finishing_a_pipeline_ends_the_step_runs_its_processes_left_open(client):
    exp = client.create_experiment("e")
    pipeline = open_run(client, exp, C.KIND_PIPELINE)
    done = open_run(client, exp, C.KIND_STEP, parent=pipeline, name="ingest_clean")
    client.set_terminated(done, "FINISHED")
    stuck = open_run(client, exp, C.KIND_STEP, parent=pipeline, name="train")
    ended = lifecycle.finish_pipeline_run(client, pipeline, "FAILED", "step train failed")
    assert [e.run_id for e in ended] == [stuck, pipeline]
    assert status(client, pipeline) == status(client, stuck) == "FAILED"
    assert status(client, done) == "FINISHED"
    killed = open_run(client, exp, C.KIND_PIPELINE)
    lifecycle.finish_pipeline_run(client, killed, "KILLED", "interrupted")
    assert status(client, killed) == "KILLED"


def test_the_heartbeat_stamps_runs_and_the_watchdog_stops_a_step_without_tracking(
    client, monkeypatch, capsys
):
    exp = client.create_experiment("e")
    run = open_run(client, exp, C.KIND_STEP, beat_age=50)
    monkeypatch.setenv(lifecycle.LEASE_ENV, "6")
    with lifecycle.Heartbeat(client.tracking_uri, [run], "train") as beat:
        assert beat.interval == 1.0
        time.sleep(2.5)
    assert time.time() - float(client.get_run(run).data.tags[lifecycle.TAG_HEARTBEAT]) < 5
    exits = []
    monkeypatch.setattr(os, "_exit", exits.append)
    monkeypatch.setattr(lifecycle, "signal_children", lambda _s: None)
    silent = lifecycle.Heartbeat("http://127.0.0.1:9", [run], "train")
    silent._give_up(61)
    assert exits == [lifecycle.WATCHDOG_EXIT]
    line = capsys.readouterr().err.strip()
    assert line.startswith("kerasflow: error in train: the MLflow tracking server at ")
    assert "http://127.0.0.1:9 has not answered for 61 s" in line


def test_bounded_returns_raises_or_times_out():
    assert lifecycle.bounded(lambda x: x + 1, 5, 1) == 2
    with pytest.raises(ZeroDivisionError):
        lifecycle.bounded(lambda: 1 / 0, 5)
    with pytest.raises(TimeoutError):
        lifecycle.bounded(time.sleep, 0.2, 5)


def test_client_environment_bounds_each_tracking_call():
    env = lifecycle.client_environment(30)
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    assert int(env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]) <= 2


def step_that(action):
    @boundary.step_entry("demo")
    def run():
        return action()

    return run


def test_an_interrupted_step_ends_with_one_line_and_128_plus_the_signal(capsys):
    def interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    with pytest.raises(SystemExit) as stopped:
        step_that(interrupt)()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert capsys.readouterr().err.strip() == "kerasflow: error in demo: interrupted by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_step_of_an_interrupted_run_does_not_start(tmp_path, monkeypatch, capsys):
    stop = tmp_path / "run.stop"
    stop.write_text("the run was interrupted by SIGINT")
    monkeypatch.setenv(lifecycle.STOP_FILE_ENV, str(stop))
    ran = []
    with pytest.raises(SystemExit) as stopped:
        step_that(lambda: ran.append(1))()
    assert stopped.value.code == 130 and ran == []
    assert "not started: the run was interrupted by SIGINT" in capsys.readouterr().err


def test_a_full_disk_is_one_line_naming_the_path(capsys):
    def full():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/srv/models/m/3")

    with pytest.raises(SystemExit) as stopped:
        step_that(full)()
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "kerasflow: error in demo: no space left on device writing /srv/models/m/3 "
        "(free some space, then rerun)"
    )


def test_copy_dir_atomic_reports_a_taken_name_and_a_failed_copy_as_os_errors(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    (src / "saved_model.pb").write_bytes(b"x" * 100)
    dest = tmp_path / "models" / "m" / "1"
    real_rename = os.rename

    def racing_rename(a, b):  # another publisher renames into the name first
        Path(b).mkdir(parents=True)
        (Path(b) / "theirs").write_text("1")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", racing_rename)
    with pytest.raises(FileExistsError):
        fileio.copy_dir_atomic(src, str(dest))
    monkeypatch.setattr(os, "rename", real_rename)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["1"]  # no temporary left

    def no_space(*_args, **_kwargs):
        raise shutil.Error([(str(src), "x", "[Errno 28] No space left on device: 'x'")])

    monkeypatch.setattr(shutil, "copytree", no_space)
    with pytest.raises(OSError) as failed:
        fileio.copy_dir_atomic(src, str(tmp_path / "models" / "m" / "2"))
    assert failed.value.errno == errno.ENOSPC
    assert failed.value.filename == str(tmp_path / "models" / "m" / "2")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["1"]


def test_run_durations_are_settings_and_flags():
    cfg = RunSettings.from_values({"tracking_timeout": 15}, {"run_lease": 40.0})
    assert (cfg.tracking_timeout, cfg.run_lease) == (15.0, 40.0)
    assert RunSettings().tracking_timeout == 60.0 and RunSettings().run_lease == 120.0
    for bad in (0, -1, "soon", True):
        with pytest.raises(UserError, match="must be a number of seconds > 0"):
            RunSettings.from_values({"tracking_timeout": bad})


def test_a_run_left_running_under_an_ended_run_is_reconciled_and_a_failed_step_ends_its_own(
    client,
):
    exp = client.create_experiment("e")
    pipeline = open_run(client, exp, C.KIND_PIPELINE, beat_age=1)
    step = open_run(client, exp, C.KIND_STEP, parent=pipeline, beat_age=1, name="search")
    trial = open_run(client, exp, C.KIND_TRIAL, parent=step, name="trial-0")
    client.set_terminated(step, "KILLED")  # the step ended but was recording a trial
    ended = lifecycle.reconcile(client, exp)
    assert [e.run_id for e in ended] == [trial]
    assert ended[0].reason == "reconciled: the run it is nested in ended"
    assert status(client, pipeline) == "RUNNING"  # its lease is alive
    live = open_run(client, exp, C.KIND_STEP, parent=pipeline, name="train")
    nested = open_run(client, exp, C.KIND_TRIAL, parent=live, name="trial-1")
    assert [e.run_id for e in lifecycle.end_nested(client, live, "FAILED", "x")] == [nested]
    assert status(client, nested) == "FAILED" and status(client, live) == "RUNNING"
