"""Shared fixtures: an isolated MLflow store for every test, and no run left active."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory) -> str:
    """One SQLite tracking store for the session (creating its schema costs seconds)."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch, mlflow_store):
    """Points MLflow at the test store and fails the test if it leaves a run active."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None and mlflow.active_run() is not None:
        run = mlflow.active_run()
        while mlflow.active_run() is not None:
            mlflow.end_run()
        pytest.fail(f"test left MLflow run {run.info.run_id} active")
