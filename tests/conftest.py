"""Shared fixtures: an isolated MLflow store for every test, and no run left active; the
longest test file collected first."""

from __future__ import annotations

import sys

import pytest

LONGEST_FIRST = ("tests/e2e/test_readme_digits.py",)
"""Files of one long test each. Collected first, they start first under `-n 2` (pyproject's
addopts keep xdist to the collection order) instead of running alone at the end of the suite."""


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FIRST)  # stable


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One SQLite tracking store per test file (creating its schema costs seconds). Per file,
    not per session: the files a test process takes, and their order, vary from run to run."""
    return "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch, tmp_path):
    """Points MLflow at a store of the test's own and fails the test if it leaves a run active.

    A store per test keeps registered models (and their champions) from leaking between tests;
    tests that share state on purpose take the `mlflow_store` fixture instead.
    """
    _forget_uris_set_in_code()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///" + str(tmp_path / "mlflow.db"))
    # The registry is the store. Set (empty, which MLflow reads as unset) rather than deleted,
    # so that the values `mlflow.set_registry_uri` and `mlflow.set_experiment` write into the
    # environment are undone too.
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")  # mlflow.set_experiment writes it too
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    yield
    mlflow = sys.modules.get("mlflow")
    left_active = mlflow.active_run() if mlflow is not None else None
    while mlflow is not None and mlflow.active_run() is not None:
        mlflow.end_run()
    _forget_uris_set_in_code()
    if left_active is not None:
        pytest.fail(f"test left MLflow run {left_active.info.run_id} active")


def _forget_uris_set_in_code() -> None:
    """Drops a tracking or registry URI set with `mlflow.set_tracking_uri` (as the run and the
    steps do when called in-process), and the experiment `mlflow.set_experiment` made active.
    Both outlive the test that set them and outrank the environment, so the next test in the
    process would write to that test's store, or name an experiment its own store lacks."""
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        mlflow.tracking.fluent._active_experiment_id = None  # no public way to unset it
