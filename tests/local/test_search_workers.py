"""Parallel trials: the search step as a chief oracle with two worker processes on loopback."""

from __future__ import annotations

import json

import mlflow
import pytest

from kerasflow.tracking import runs
from tests.local.test_search_resume import finished
from tests.unit.test_tuning import make_tabular_bundle

pytestmark = pytest.mark.local


def run_search_step(tmp_path, store: str, name: str, data, root, **settings) -> str:
    """Runs the search step on `data` under a fresh pipeline run; returns that run's id."""
    from kerasflow.components.hyperparameter_search import core

    parent = runs.find_or_create_pipeline_run(store, f"search-{name}", f"{name}-1")
    core.run(
        settings={"max_epochs": 1, "batch_size": 16, "patience": 1, "seed": 1, **settings},
        splits_dir=str(data),
        train_dir=str(data),
        hparams_path=str(tmp_path / "best.json"),
        summary_path=str(tmp_path / "summary.md"),
        tracking_uri=store,
        parent_run_id=parent,
        pipeline_root=str(root),
    )
    return parent


def test_two_workers_share_one_search(tmp_path, mlflow_store, capfd):
    data = make_tabular_bundle(tmp_path / "data", rows=160, seed=4)
    root = tmp_path / "pipeline_root"
    parent = run_search_step(
        tmp_path,
        mlflow_store,
        "workers",
        data,
        root,
        tuner="bayesian",
        max_trials=4,
        max_epochs=3,
        patience=3,
        tuner_workers=2,
    )
    out = capfd.readouterr().out
    assert "chief oracle at 127.0.0.1:" in out and "2 workers" in out
    assert len(finished(root)) == 4
    assert "learning_rate" in json.loads((tmp_path / "best.json").read_text())

    client = mlflow.MlflowClient(mlflow_store)
    exp = client.get_run(parent).info.experiment_id
    (step,) = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert step.data.tags["tuners"] == "worker0,worker1"  # both workers asked the chief
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{step.info.run_id}'")
    assert len(trials) == 4 and all(t.info.status == "FINISHED" for t in trials)
    assert {t.data.tags["tuner_id"] for t in trials} <= {"worker0", "worker1"}
    assert all(t.data.metrics.get("val_accuracy") is not None for t in trials)


DYING_MODEL = """
import os, signal
import keras
from kerasflow.modeling import builders


def build(hp, meta):
    inputs, x = builders.build_inputs(meta)
    x = keras.layers.Dense(hp.Choice("units", [4, 8]))(x)
    if hp.Choice("die", [False, True]) and os.environ.get("KERASTUNER_TUNER_ID") != "chief":
        os.kill(os.getpid(), signal.SIGKILL)  # as the kernel's out-of-memory killer does
    return builders.compile_model(
        keras.Model(inputs, builders.build_head(meta, x)), meta, "adam", 1e-2
    )
"""


def test_a_trial_that_kills_its_process_is_recorded_failed_and_the_search_goes_on(
    tmp_path, mlflow_store, capfd
):
    data = make_tabular_bundle(tmp_path / "data", rows=80, seed=5)
    (tmp_path / "dying.py").write_text(DYING_MODEL)
    parent = run_search_step(
        tmp_path,
        mlflow_store,
        "crash",
        data,
        tmp_path / "root",
        tuner="grid",
        max_trials=4,
        build_model=f"{tmp_path}/dying.py:build",
        trials_per_process=1,
        max_consecutive_failures=3,
    )
    assert "recorded as failed" in capfd.readouterr().out
    assert json.loads((tmp_path / "best.json").read_text())["die"] in (False, 0)
    assert sorted(finished(tmp_path / "root")) == ["0", "2"]
    client = mlflow.MlflowClient(mlflow_store)
    exp = client.get_run(parent).info.experiment_id
    (step,) = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert step.data.metrics["failed_trials"] == 2 and step.data.metrics["completed_trials"] == 2
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{step.info.run_id}'")
    dead = [t for t in trials if t.data.tags["trial_id"] in ("1", "3")]
    assert dead and all(t.info.status == "FAILED" for t in dead)
    assert all(t.data.tags["error"].startswith("WorkerDied") for t in dead)


COUNTING_MODEL = """
import os
import keras
from kerasflow.modeling import builders

# Every process that loads the model function says so: the step, then each worker.
with open(os.environ["KF_TEST_PIDS"], "a") as out:
    out.write(f"{os.getpid()} {os.environ.get('KERASTUNER_TUNER_ID', 'step')}\\n")


def build(hp, meta):
    inputs, x = builders.build_inputs(meta)
    x = keras.layers.Dense(hp.Choice("units", [4, 8, 16]))(x)
    return builders.compile_model(
        keras.Model(inputs, builders.build_head(meta, x)), meta, "adam", 1e-2
    )
"""


def test_no_worker_is_started_once_every_trial_is_handed_out(tmp_path, mlflow_store, monkeypatch):
    data = make_tabular_bundle(tmp_path / "data", rows=80, seed=6)
    (tmp_path / "counting.py").write_text(COUNTING_MODEL)
    pids = tmp_path / "pids.txt"
    monkeypatch.setenv("KF_TEST_PIDS", str(pids))
    run_search_step(
        tmp_path,
        mlflow_store,
        "quota",
        data,
        tmp_path / "root",
        tuner="grid",
        max_trials=2,
        build_model=f"{tmp_path}/counting.py:build",
        trials_per_process=1,
    )
    assert sorted(finished(tmp_path / "root")) == ["0", "1"]
    workers = {line for line in pids.read_text().splitlines() if " worker" in line}
    # One process per trial: none is started after the second trial only to hear it is over.
    assert len(workers) == 2
