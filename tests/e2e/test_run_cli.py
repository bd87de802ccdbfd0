"""`kerasflow run` end to end, as a user runs it: a subprocess, real steps, a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from kerasflow import constants as C
from tests.e2e.cli import kerasflow, predict_served

pytestmark = pytest.mark.e2e


def test_breast_cancer_runs_through_all_seven_steps_and_deploys(tmp_path, monkeypatch):
    # System metrics every second (MLflow samples every 10 s by default), so short steps have some.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    proc = kerasflow(
        "run",
        "--data",
        "builtin:breast_cancer",
        "--tuner",
        "hyperband",
        "--max-epochs",
        "3",
        "--final-epochs",
        "10",
        "--work-dir",
        "work",
        "--summary-json",
        "summary.json",
        "--threshold",
        "accuracy=0.85",
        "--model-name",
        "cancer-e2e",
        # The augmented train split (794 rows) is streamed: the search and the final fit read
        # it a row group at a time (other table runs hold it in memory).
        "--stream-rows",
        "500",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("hyperparameter_search", "train"):
        assert f"{step}: reading 794 train rows a row group at a time" in proc.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["blessed"] is True
    assert summary["test_metrics"]["accuracy"] >= 0.85
    assert set(summary["test_metrics"]) == {"accuracy", "precision", "recall", "f1", "roc_auc"}
    assert summary["model_version"] == 1
    version_dir = Path(summary["model_path"])
    assert version_dir == tmp_path / "work" / "models" / "cancer-e2e" / "1"
    assert (version_dir / "saved_model.pb").is_file()
    assert "learning_rate" in summary["best_hyperparameters"]
    assert not any(k.startswith("tuner/") for k in summary["best_hyperparameters"])
    # progress is visible: each step and each trial printed a line
    for step in ("ingest_clean", "normalize_split", "augment", "train", "evaluate", "deploy"):
        assert f"] {step}: " in proc.stdout
    assert "hyperparameter_search: trial 1" in proc.stdout
    assert "deployed: version 1" in proc.stdout
    # progress: an epoch line per epoch and a trials line per trial, with an estimate
    assert "train: epoch 1/10 loss " in proc.stdout and "val_accuracy" in proc.stdout
    assert "hyperparameter_search: trials 1/6 best val_accuracy" in proc.stdout
    assert ", eta 0:" in proc.stdout
    assert len(proc.stdout.splitlines()) < 200  # piped output stays compact
    assert "pictures: confusion_matrix.png, roc_curve.png, pr_curve.png in " in proc.stdout
    assert list((tmp_path / "work" / "logs").glob("run-*.log"))
    # MLflow: the pipeline run, a run per step, a run per trial
    client = mlflow.MlflowClient(summary["tracking_uri"])
    run = client.get_run(summary["mlflow_run_id"])
    exp = run.info.experiment_id
    steps = client.search_runs([exp], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    assert len(steps) == 7
    search = next(r for r in steps if r.data.tags[C.TAG_STEP] == "hyperparameter_search")
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{search.info.run_id}'")
    assert len(trials) >= 3 and all(r.data.metrics for r in trials)
    train = next(r for r in steps if r.data.tags[C.TAG_STEP] == "train")
    names = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert {"training_history.png", "model", "model_summary.txt"} <= names
    for long_step in (search, train):
        assert any(k.startswith("system/cpu_utilization") for k in long_step.data.metrics)
    ingest_metrics = next(r for r in steps if r.data.tags[C.TAG_STEP] == "ingest_clean").data
    assert not any(k.startswith("system/") for k in ingest_metrics.metrics)
    # The experiment opens in MLflow's model-training view; the data are run inputs.
    assert client.get_experiment(exp).tags["mlflow.experimentKind"] == "custom_model_development"
    split = next(r for r in steps if r.data.tags[C.TAG_STEP] == "normalize_split")
    inputs = client.get_run(split.info.run_id).inputs.dataset_inputs
    contexts = {t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "val", "test"}
    assert all(i.dataset.digest and i.dataset.name.startswith("breast_cancer-") for i in inputs)
    assert all("builtin:breast_cancer" in i.dataset.source for i in inputs)
    ingest = next(r for r in steps if r.data.tags[C.TAG_STEP] == "ingest_clean")
    (clean,) = client.get_run(ingest.info.run_id).inputs.dataset_inputs
    assert clean.dataset.name == "breast_cancer-clean"
    assert '"num_rows": 569' in clean.dataset.profile  # no row of the bundled set is dropped
    evaluate = next(r for r in steps if r.data.tags[C.TAG_STEP] == "evaluate")
    pictures = {a.path for a in client.list_artifacts(evaluate.info.run_id, "evaluation")}
    assert pictures == {f"evaluation/{n}_curve.png" for n in ("roc", "pr")} | {
        "evaluation/confusion_matrix.png"
    }
    page = next((tmp_path / "work" / "pipeline_root").rglob("evaluate/pictures"))
    assert page.read_text().count("data:image/png;base64,") == 3
    champion = client.get_model_version_by_alias("cancer-e2e", "champion")
    assert champion.tags["kerasflow.mlflow_run_id"] == summary["mlflow_run_id"]
    # The registered version comes from the train run's LoggedModel (MLflow's Keras flavor).
    logged = client.get_logged_model(champion.source.removeprefix("models:/"))
    assert logged.source_run_id == train.info.run_id
    assert champion.run_id == train.info.run_id
    assert_flavor_predicts_like_served(tmp_path / "work", summary["tracking_uri"])
    assert champion.tags["kerasflow.serving_version"] == "1"
    assert_served_like_evaluated(tmp_path / "work")


def assert_flavor_predicts_like_served(work: Path, tracking_uri: str) -> None:
    """`models:/cancer-e2e@champion` loaded with the Keras flavor answers the whole test split
    like the served SavedModel (whose answers are evaluation's predictions)."""
    import numpy as np

    from kerasflow.data import artifacts
    from kerasflow.tracking import models

    mlflow.set_tracking_uri(tracking_uri)
    splits = next(work.joinpath("pipeline_root").rglob("normalize-split/splits"))
    meta, test = artifacts.load_meta(splits), artifacts.load_part(splits, "test")
    preds = next(work.joinpath("pipeline_root").rglob("evaluate/predictions"))
    served = np.load(preds / C.PREDICTIONS_FILE)["outputs"]
    model = models.load_keras_model("models:/cancer-e2e@champion")
    flavored = model.predict(artifacts.model_inputs(meta, test), verbose=0)
    np.testing.assert_allclose(flavored, served, atol=1e-5)


def assert_served_like_evaluated(work: Path) -> None:
    """Serves what the run deployed and queries it with raw test rows over REST and gRPC, as a
    TF Serving client would; the answers equal the evaluation step's predictions."""
    import numpy as np
    import pandas as pd
    import requests
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from kerasflow.data import artifacts
    from kerasflow.serving import ModelServer, ServerOptions, load_model_config_file

    splits = next(work.joinpath("pipeline_root").rglob("normalize-split/splits"))
    meta, test = artifacts.load_meta(splits), artifacts.load_part(splits, "test")
    preds = next(work.joinpath("pipeline_root").rglob("evaluate/predictions"))
    expected = np.load(preds / C.PREDICTIONS_FILE)["outputs"][:5]
    inputs = artifacts.model_inputs(meta, test.take(np.arange(5)))
    instances = [{k: v[i].tolist() for k, v in inputs.items()} for i in range(5)]
    configs = load_model_config_file(str(work / "models" / "models.config"))
    options = ServerOptions(models=configs, grpc_port=0, rest_port=0, poll_seconds=0)
    with ModelServer(options) as server:
        status = requests.get(f"{server.rest_url}/v1/models/cancer-e2e", timeout=10).json()
        assert status["model_version_status"][0]["state"] == "AVAILABLE"
        reply = requests.post(
            f"{server.rest_url}/v1/models/cancer-e2e:predict",
            json={"instances": instances},
            timeout=30,
        )
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(reply.json()["predictions"], expected, atol=1e-5)
        named = requests.post(
            f"{server.rest_url}/v1/models/cancer-e2e:predict",
            json={"signature_name": "classify", "instances": instances},
            timeout=30,
        ).json()["predictions"]
        names = meta[C.META_CLASS_NAMES]
        assert [row["classes"] for row in named] == [names[i] for i in expected.argmax(axis=1)]
        request = predict_pb2.PredictRequest()
        request.model_spec.name = "cancer-e2e"
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        import grpc

        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answer = stub.Predict(request, timeout=30)
        got = tf.make_ndarray(answer.outputs[C.SERVING_OUTPUT])
        np.testing.assert_allclose(got, expected, atol=1e-5)
    # kerasflow predict on a CSV of raw rows with an extra id column: class names back
    frame = pd.DataFrame({k: v[:, 0] for k, v in inputs.items()})
    frame.insert(0, "id", range(5))
    frame.to_csv(work / "rows.csv", index=False)
    answer = predict_served(work, "cancer-e2e", "--input", "rows.csv", "--json")
    assert answer.returncode == 0, answer.stderr
    rows = json.loads(answer.stdout)["predictions"]
    assert [r["class"] for r in rows] == [names[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(
        [[r["probabilities"][n] for n in names] for r in rows], expected, atol=1e-5
    )


def test_diabetes_regression_reports_r2_and_an_unblessed_model_is_not_deployed(tmp_path):
    proc = kerasflow(
        "run",
        "--data",
        "builtin:diabetes",
        "--tuner",
        "random",
        "--max-trials",
        "2",
        "--max-epochs",
        "3",
        "--final-epochs",
        "5",
        "--work-dir",
        "work",
        "--threshold",
        "r2=0.99",
        "--summary-json",
        "s.json",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "s.json").read_text())
    assert set(summary["test_metrics"]) == {"mae", "rmse", "r2"}
    assert summary["blessed"] is False and summary["model_version"] is None
    assert "FAILS >= 0.99" in summary["blessing_reasons"][0]
    assert not (tmp_path / "work" / "models").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "missing.csv", "--label", "y"], "data not found: missing.csv"),
        (["--data", "table.csv", "--label", "price"], "label column 'price' not found"),
        (["--tuner", "annealing"], "unknown tuner 'annealing'"),
        (["--max-trials", "-3"], "'max_trials' must be >= 1"),
        (["--data", "builtin:mnist"], "unknown builtin dataset 'mnist'"),
        (["--config", "bad.yaml"], "unknown config key 'epochz'"),
        (["--threshold", "auc=0.9"], "threshold on unknown metric 'auc'"),
    ],
)
def test_bad_input_ends_with_one_clear_line_and_nothing_deployed(tmp_path, args, message):
    (tmp_path / "table.csv").write_text("a,b,y\n1,2,0\n3,4,1\n")
    (tmp_path / "bad.yaml").write_text("epochz: 3\n")
    proc = kerasflow("run", "--work-dir", "work", *args, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasflow: error: "), proc.stderr
    assert message in lines[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "work" / "models").exists()


def test_failure_inside_a_step_names_the_step_without_a_traceback(tmp_path):
    (tmp_path / "one_class.csv").write_text("a,b,y\n" + "".join(f"{i},{i},x\n" for i in range(30)))
    proc = kerasflow(
        "run",
        "--data",
        "one_class.csv",
        "--label",
        "y",
        "--task",
        "classification",
        "--work-dir",
        "work",
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "kerasflow: error in ingest_clean: the label has only one class" in proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("kerasflow: error: step ingest_clean failed: the label has only one")
    assert "full log" in line
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (tmp_path / "work" / "models").exists()
