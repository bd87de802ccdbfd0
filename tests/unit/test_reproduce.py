"""Rebuilding a recorded run's settings for a reproduction, and comparing its metrics."""

from __future__ import annotations

import pytest

from kerasflow.pipelines import reproduce
from kerasflow.runtime.errors import UserError
from kerasflow.settings import STEP_SETTINGS, RunSettings
from kerasflow.tracking import lineage

pytestmark = pytest.mark.unit

BEST = {"learning_rate": 0.01, "num_layers": 1, "units_0": 32}


def recorded(cfg: RunSettings, skip: tuple[str, ...] = ("deploy",)) -> reproduce.Original:
    settings = {
        step: getattr(cfg, step).model_dump(mode="json")
        for step in STEP_SETTINGS
        if step not in skip
    }
    return reproduce.Original(
        run_id="abc123",
        experiment="exp",
        settings=settings,
        best_hyperparameters=BEST,
        data_digest="0123456789abcdef",
        test_metrics={"accuracy": 0.9},
    )


def original_settings(**values) -> RunSettings:
    return RunSettings.from_values(
        {"model_name": "digits", "seed": 7, "max_trials": 4, "serving_dir": "/srv/m", **values}
    )


def test_a_reproduction_reruns_the_recorded_settings_on_the_best_hyperparameters():
    cfg = reproduce.reproduction_settings(
        recorded(original_settings(augment_factor=2, batch_size=16)),
        tracking_uri="sqlite:///x.db",
        work_dir="/tmp/w",
        with_search=False,
        deploy=False,
    )
    assert cfg.hyperparameter_search.hyperparameters == BEST
    assert cfg.train.deterministic is True
    assert cfg.evaluate.publish is False
    assert cfg.train.seed == cfg.normalize_split.seed == 7
    assert cfg.augment.augment_factor == 2 and cfg.train.batch_size == 16
    assert cfg.experiment == "exp" and cfg.tracking_uri == "sqlite:///x.db"
    # deploy recorded nothing (the run was not blessed): the shared keys come from the others
    assert cfg.deploy.model_name == "digits" and cfg.deploy.serving_dir == "/srv/m"
    args = cfg.pipeline_arguments()
    assert args["model_name"] == "digits" and args["max_trials"] == 4 and args["seed"] == 7


def test_with_search_keeps_the_search_and_deploy_turns_publishing_on():
    cfg = reproduce.reproduction_settings(
        recorded(original_settings()),
        tracking_uri="sqlite:///x.db",
        work_dir="/tmp/w",
        with_search=True,
        deploy=True,
    )
    assert cfg.hyperparameter_search.hyperparameters == {}
    assert cfg.evaluate.publish is True and cfg.train.deterministic is True


def test_a_warm_started_run_or_one_without_best_hyperparameters_is_refused():
    with pytest.raises(UserError, match="warm start"):
        reproduce.reproduction_settings(
            recorded(original_settings(warm_start=True)),
            tracking_uri="u", work_dir="w", with_search=False, deploy=False,
        )  # fmt: skip
    original = recorded(original_settings())
    original.best_hyperparameters = {}
    with pytest.raises(UserError, match="no best hyperparameters"):
        reproduce.reproduction_settings(
            original, tracking_uri="u", work_dir="w", with_search=False, deploy=False
        )


def test_metrics_are_compared_one_by_one_within_the_tolerance():
    rows = reproduce.compare({"accuracy": 0.95, "f1": 0.9}, {"accuracy": 0.953, "f1": 0.88}, 0.005)
    by_name = {r["metric"]: r for r in rows}
    assert by_name["accuracy"]["within_tolerance"] is True
    assert by_name["accuracy"]["difference"] == pytest.approx(0.003)
    assert by_name["f1"]["within_tolerance"] is False
    table = reproduce.format_table(rows, 0.005)
    assert "accuracy" in table and "NO" in table.splitlines()[2]
    missing = reproduce.compare({"accuracy": 0.9}, {}, 0.005)
    assert missing[0]["within_tolerance"] is False


def test_fixed_hyperparameters_must_be_single_values_and_whole_floats_are_ints_again():
    with pytest.raises(UserError, match="single value"):
        RunSettings.from_values({"hyperparameter_search": {"hyperparameters": {"units": [1, 2]}}})
    # as a KFP dict parameter hands them back
    fixed = {"units": 32.0, "num_layers": 2.0, "learning_rate": 0.01, "optimizer": "adam"}
    cfg = RunSettings.from_values({"hyperparameter_search": {"hyperparameters": fixed}})
    got = cfg.hyperparameter_search.hyperparameters
    assert got == {"units": 32, "num_layers": 2, "learning_rate": 0.01, "optimizer": "adam"}
    assert type(got["units"]) is int and type(got["num_layers"]) is int


def test_code_version_names_the_package_and_a_baked_commit(monkeypatch):
    from kerasflow import __version__

    monkeypatch.setenv(lineage.GIT_COMMIT_ENV, "f00d")
    monkeypatch.setenv(lineage.IMAGE_ENV, "kerasflow:dev@sha256:1")
    assert lineage.code_version() == {
        lineage.TAG_CODE_VERSION: __version__,
        lineage.TAG_GIT_COMMIT: "f00d",
        lineage.TAG_IMAGE: "kerasflow:dev@sha256:1",
    }
