"""Parallel trials: the search step as a chief oracle with two worker processes on loopback."""

from __future__ import annotations

import json

import mlflow
import pytest

from kerasflow import tracking
from tests.local.test_search_resume import finished
from tests.unit.test_tuning import make_tabular_bundle

pytestmark = pytest.mark.local


def test_two_workers_share_one_search(tmp_path, mlflow_store, capfd):
    from kerasflow.components.hyperparameter_search import core

    data = make_tabular_bundle(tmp_path / "data", rows=160, seed=4)
    root = tmp_path / "pipeline_root"
    parent = tracking.find_or_create_pipeline_run(mlflow_store, "search-workers", "workers-1")
    core.run(
        str(data),
        str(data),
        "bayesian",
        4,
        3,
        16,
        3,
        1,
        "",
        str(tmp_path / "best.json"),
        str(tmp_path / "summary.md"),
        mlflow_store,
        parent,
        tuner_workers=2,
        pipeline_root=str(root),
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
