"""`kerasflow run` with data and serving directory on s3:// (an in-process S3 server), then
`kerasflow serve` from the serving config the run wrote there. The budget is the smallest that
runs every step (iris, one trial, one epoch): the test is that each step reads and writes the
store, not the model's accuracy. The gs:// equivalent is the census run in test_data_pipelines."""

from __future__ import annotations

import json

import pytest

from tests.e2e import cli

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.s3_server"]

TINY = ["--tuner", "random", "--max-trials", "1", "--max-epochs", "1", "--final-epochs", "1"]
MODEL = "kerasflow-model"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def test_run_with_data_and_serving_dir_on_s3_then_serve_from_s3(s3, tmp_path):
    from sklearn.datasets import load_iris

    frame = load_iris(as_frame=True).frame
    frame.columns = [*FEATURES, "species"]
    frame.to_csv(tmp_path / "iris.csv", index=False)
    data = s3.upload(tmp_path / "iris.csv", "in/iris.csv")
    serving = f"s3://{s3.bucket}/models"
    proc = cli.kerasflow(
        "run", "--data", data, "--label", "species", "--serving-dir", serving, *TINY,
        "--work-dir", "work", "--summary-json", "s.json", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["model_path"] == f"{serving}/{MODEL}/1"
    names = s3.names("models/")
    assert f"models/{MODEL}/1/saved_model.pb" in names
    assert f"models/{MODEL}/1/.kerasflow-published.json" in names
    assert "models/models.config" in names

    rows = frame[FEATURES].iloc[[0, 100]].values.tolist()
    instances = [{n: [v] for n, v in zip(FEATURES, row, strict=True)} for row in rows]
    served = cli.serve_and_predict(f"{serving}/models.config", MODEL, instances, tmp_path)
    assert [(s["version"], s["state"]) for s in served["status"]] == [("1", "AVAILABLE")]
    assert len(served["predictions"]) == 2
    assert all(len(p) == 3 for p in served["predictions"])
