"""Resume: the search step killed with SIGKILL mid-search, run again, keeps what it finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from kerasflow.tracking import runs
from tests.unit.test_tuning import make_tabular_bundle

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.local

MAX_TRIALS = 6
STEP = (
    "import json, sys\n"
    "from kerasflow.components.hyperparameter_search import core\n"
    "core.run(**json.loads(sys.argv[1]))\n"
)


def finished(root: Path) -> dict[str, float]:
    """Trial id -> score of every completed trial under a pipeline root's tuning folder."""
    out = {}
    for path in root.glob("tuning/*/search/trial_*/trial.json"):
        with open(path) as fh:
            try:
                trial = json.load(fh)
            except json.JSONDecodeError:
                continue  # being written
        if trial["status"] == "COMPLETED":
            out[trial["trial_id"]] = trial["score"]
    return out


def test_killed_search_resumes_without_rerunning_finished_trials(tmp_path, mlflow_store):
    data = make_tabular_bundle(tmp_path / "data", rows=240, seed=2)
    root = tmp_path / "pipeline_root"
    parent = runs.find_or_create_pipeline_run(mlflow_store, "search-resume", "resume-1")
    args = dict(
        settings={
            "tuner": "random",
            "max_trials": MAX_TRIALS,
            "max_epochs": 4,
            "batch_size": 16,
            "patience": 4,
            "seed": 5,
        },
        splits_dir=str(data),
        train_dir=str(data),
        hparams_path=str(tmp_path / "out" / "best.json"),
        summary_path=str(tmp_path / "out" / "summary.md"),
        tracking_uri=mlflow_store,
        parent_run_id=parent,
        pipeline_root=str(root),
    )
    cmd = [sys.executable, "-c", STEP, json.dumps(args)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while len(finished(root)) < 2 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    before = finished(root)
    assert first.returncode == -signal.SIGKILL
    assert 2 <= len(before) < MAX_TRIALS, (tmp_path / "first.log").read_text()[-2000:]

    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    after = finished(root)
    assert len(after) == MAX_TRIALS
    assert {k: after[k] for k in before} == before  # finished trials kept as they were
    assert f"resuming: {len(before)} finished trials kept" in second.stdout
    rerun = {
        line.split("(")[1].split(",")[0]
        for line in second.stdout.splitlines()
        if "hyperparameter_search: trial " in line
    }
    assert rerun and not rerun & set(before)
    assert json.loads((tmp_path / "out" / "best.json").read_text())["learning_rate"] > 0

    client = mlflow.MlflowClient(mlflow_store)
    exp = client.get_run(parent).info.experiment_id
    steps = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(r.info.status for r in steps) == ["FINISHED", "RUNNING"]  # killed, then done
    done_step = next(r for r in steps if r.info.status == "FINISHED")
    assert done_step.data.metrics["kept_trials"] == len(before)
    rerun_runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{done_step.info.run_id}'")
    assert {t.data.tags["trial_id"] for t in rerun_runs} == set(after) - set(before)
    assert all(t.info.status == "FINISHED" for t in rerun_runs)


def remote_trials(s3, prefix: str) -> dict[str, tuple[str, float]]:
    """Stored trial.json name -> (last-modified stamp, score) of every completed trial."""
    out = {}
    client = s3.client()
    for name in s3.names(prefix):
        if name.endswith("/trial.json"):
            obj = client.get_object(Bucket=s3.bucket, Key=name)
            trial = json.loads(obj["Body"].read())
            if trial["status"] == "COMPLETED":
                out[name] = (str(obj["LastModified"]), trial["score"])
    return out


def test_a_search_on_s3_resumes_from_the_trials_synced_to_the_store(tmp_path, mlflow_store, s3):
    data = make_tabular_bundle(tmp_path / "data", rows=120, seed=3)
    parent = runs.find_or_create_pipeline_run(mlflow_store, "search-s3", "s3-1")
    settings = {"tuner": "random", "max_epochs": 1, "batch_size": 16, "patience": 1, "seed": 7}

    def search(trials: int, attempt: str) -> subprocess.CompletedProcess:
        args = dict(
            settings={**settings, "max_trials": trials},
            splits_dir=str(data),
            train_dir=str(data),
            hparams_path=str(tmp_path / attempt / "best.json"),
            summary_path=str(tmp_path / attempt / "summary.md"),
            tracking_uri=mlflow_store,
            parent_run_id=parent,
            pipeline_root=f"s3://{s3.bucket}/root",
        )
        cmd = [sys.executable, "-c", STEP, json.dumps(args)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)

    first = search(1, "first")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    before = remote_trials(s3, "root/tuning/")
    assert len(before) == 1
    # A larger budget continues the same search from the store: the stored trial is neither
    # run nor written again, and one more trial joins it.
    second = search(2, "second")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    after = remote_trials(s3, "root/tuning/")
    assert len(after) == 2
    assert {k: after[k] for k in before} == before
