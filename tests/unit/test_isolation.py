"""Each test talks to its own tracking store, whatever an earlier test in the process set."""

import os

import pytest

pytestmark = pytest.mark.unit


def test_a_uri_set_in_code_by_one_test(tmp_path):
    import mlflow

    mlflow.set_tracking_uri("sqlite:///" + str(tmp_path / "elsewhere.db"))
    mlflow.set_registry_uri("sqlite:///" + str(tmp_path / "registry.db"))
    assert mlflow.get_tracking_uri().endswith("elsewhere.db")
    mlflow.set_experiment("elsewhere")
    mlflow.set_experiment("elsewhere-too")  # an id the next test's fresh store does not have


def test_does_not_reach_the_next_test(tmp_path):
    import mlflow

    own = "sqlite:///" + str(tmp_path / "mlflow.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == own
    assert mlflow.get_tracking_uri() == own
    assert mlflow.get_registry_uri() == own
    with mlflow.start_run() as run:  # in its own store's default experiment
        assert run.info.experiment_id == "0"
