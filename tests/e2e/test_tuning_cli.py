"""`kerasflow run` with the tuning options, as a user runs it: a declared search space, grid
search, a time budget, refit and a schedule; then the same run again fine-tuning the champion."""

from __future__ import annotations

import json

import mlflow
import pytest

from kerasflow import constants as C
from tests.e2e.cli import kerasflow

pytestmark = pytest.mark.e2e

SPACE = """
search_space:
  units: [16, 32]
  optimizer: [adam, rmsprop]
  learning_rate: 0.01
  num_layers: 1
"""


def step_run(client, summary: dict, step: str):
    run = client.get_run(summary["mlflow_run_id"])
    (found,) = client.search_runs(
        [run.info.experiment_id],
        f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.`{C.TAG_STEP}` = '{step}'",
    )
    return found


def test_grid_search_in_a_declared_space_then_a_warm_started_rerun(tmp_path):
    (tmp_path / "run.yaml").write_text(SPACE)
    common = [
        "--config",
        "run.yaml",
        "--data",
        "builtin:breast_cancer",
        "--tuner",
        "grid",
        "--max-trials",
        "3",
        "--max-epochs",
        "2",
        "--final-epochs",
        "4",
        "--time-budget",
        "10m",
        "--work-dir",
        "work",
    ]
    first = kerasflow(
        "run",
        *common,
        "--refit",
        "--lr-schedule",
        "cosine",
        "--summary-json",
        "one.json",
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    best = one["best_hyperparameters"]
    assert best["units"] in (16, 32) and best["optimizer"] in ("adam", "rmsprop")
    assert best["learning_rate"] == 0.01 and best["num_layers"] == 1
    assert one["model_version"] == 1
    assert list((tmp_path / "work" / "pipeline_root" / "tuning").glob("*/search/oracle.json"))

    client = mlflow.MlflowClient(one["tracking_uri"])
    search = step_run(client, one, "hyperparameter_search")
    names = {a.path for a in client.list_artifacts(search.info.run_id)}
    assert {
        C.HPARAMS_FILE,
        C.TRIALS_FILE,
        "search_summary.md",
        "objective_vs_hyperparameters.png",
    } <= names
    assert search.data.params["time_budget"] == "10m" and search.data.metrics["trials"] == 3
    trials = client.search_runs(
        [search.info.experiment_id], f"tags.mlflow.parentRunId = '{search.info.run_id}'"
    )
    assert len(trials) == 3 and all(t.data.tags["status"] == "COMPLETED" for t in trials)
    train = step_run(client, one, "train")
    assert train.data.params["refit"] == "true" and train.data.params["lr_schedule"] == "cosine"
    assert {"training_history.png", "model_summary.txt", "model"} <= {
        a.path for a in client.list_artifacts(train.info.run_id)
    }

    second = kerasflow("run", *common, "--warm-start", "--summary-json", "two.json", cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    two = json.loads((tmp_path / "two.json").read_text())
    assert "resuming: 3 finished trials kept" in second.stdout
    assert "hyperparameter_search: trial " not in second.stdout  # nothing searched again
    assert "fine-tuning the champion" in second.stdout
    assert step_run(client, two, "train").data.params["warm_started"] == "true"
    assert two["best_hyperparameters"] == best


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--time-budget", "10minutes"], "time budget '10minutes' is not a duration"),
        (["--config", "space.yaml"], "unknown search_space key 'neurons'"),
        (["--build-model", "no_such_module_kf:build"], "cannot import 'no_such_module_kf'"),
        (["--direction", "up"], "unknown direction 'up'"),
        (["--kfold", "1"], "'kfold' must be 0"),
    ],
)
def test_bad_tuning_options_end_with_one_clear_line(tmp_path, args, message):
    (tmp_path / "space.yaml").write_text("search_space:\n  neurons: [1, 2]\n")
    proc = kerasflow("run", "--work-dir", "work", *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasflow: error: "), proc.stderr
    assert message in lines[0]
    assert not (tmp_path / "work" / "pipeline_root").exists()
