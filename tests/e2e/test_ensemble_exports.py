"""`kerasflow run --ensemble 3 --export tflite --tensorboard-trials` on digits, tiny budget.

One run serves the three checks: the ensemble is evaluated beside its best member and served
as one model; the TFLite variants exist with their agreement; TensorBoard logs exist in the
artifacts and come back through `kerasflow tensorboard`.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from kerasflow import constants as C
from tests.e2e.cli import kerasflow

pytestmark = pytest.mark.e2e

MODEL = "digits-ensemble"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    """The finished run: its folder, summary and train step's model artifact."""
    root = tmp_path_factory.mktemp("ensemble")
    proc = kerasflow(
        "run",
        "--data", "builtin:digits",
        "--tuner", "random",
        "--max-trials", "3",
        "--max-epochs", "1",
        "--final-epochs", "2",
        "--ensemble", "3",
        "--export", "tflite",
        "--tensorboard-trials",
        "--model-name", MODEL,
        "--work-dir", "work",
        "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--summary-json", "summary.json",
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (model_dir,) = (root / "work" / "pipeline_root").glob("*/train/model")
    summary = json.loads((root / "summary.json").read_text())
    return {"root": root, "summary": summary, "model": model_dir, "stdout": proc.stdout}


def step_run(summary: dict, step: str):
    client = mlflow.MlflowClient(summary["tracking_uri"])
    parent = client.get_run(summary["mlflow_run_id"])
    found = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return client, next(r for r in found if r.data.tags.get(C.TAG_STEP) == step)


def test_the_ensemble_is_evaluated_beside_its_best_member_and_served_as_one_model(run):
    import requests
    import tensorflow as tf

    from kerasflow.modeling import builders
    from kerasflow.serving import ModelServer, ServerOptions, load_model_config_file

    info = json.loads((run["model"] / C.ENSEMBLE_FILE).read_text())
    assert info["method"] == "average" and len(info["members"]) == 3
    assert len({m["trial_id"] for m in info["members"]}) == 3
    assert sum(m["weight"] for m in info["members"]) == pytest.approx(1.0)
    summary = run["summary"]
    ensemble = summary["ensemble"]
    best = info["members"][info["best_member"]]
    assert ensemble["best_member_trial"] == best["trial_id"]
    assert ensemble["ensemble_test"] == pytest.approx(summary["test_metrics"]["accuracy"])
    assert 0.0 < ensemble["best_member_test"] <= 1.0
    assert "ensemble (average): test accuracy" in run["stdout"]
    client, evaluate = step_run(summary, "evaluate")
    assert "best_member_test_accuracy" in evaluate.data.metrics
    report = Path(client.download_artifacts(evaluate.info.run_id, "evaluation.md")).read_text()
    assert "## Ensemble (average, 3 members)" in report
    # One SavedModel with the single model's signature: an image in, 10 probabilities out.
    assert summary["blessed"] and summary["model_version"] == 1
    version = Path(summary["model_path"])
    fn = tf.saved_model.load(str(version)).signatures[C.SERVING_SIGNATURE]
    assert list(fn.structured_input_signature[1]) == [C.IMAGE_INPUT]
    assert list(fn.structured_outputs) == [C.SERVING_OUTPUT]
    # The server answers as the ensemble's own .keras file does.
    rows = np.random.default_rng(0).uniform(0, 16, size=(2, 8, 8, 1)).astype("float32")
    expected = builders.load_model(run["model"] / C.KERAS_MODEL_FILE).predict(rows, verbose=0)
    configs = load_model_config_file(str(run["root"] / "work" / "models" / "models.config"))
    options = ServerOptions(models=configs, grpc_port=0, rest_port=0, poll_seconds=0)
    with ModelServer(options) as server:
        answer = requests.post(
            f"{server.rest_url}/v1/models/{MODEL}:predict",
            json={"instances": [{C.IMAGE_INPUT: r.tolist()} for r in rows]},
            timeout=60,
        )
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(answer.json()["predictions"], expected, atol=1e-5)


def test_tflite_variants_are_in_the_model_artifact_and_mlflow_with_their_agreement(run):
    report = json.loads((run["model"] / C.TFLITE_DIR / C.TFLITE_REPORT_FILE).read_text())
    for variant in ("float32", "dynamic_range", "float16", "int8"):
        path = run["model"] / C.TFLITE_DIR / f"model_{variant}.tflite"
        assert path.stat().st_size == report[variant]["size_bytes"] > 0
    assert report["float32"]["agreement"] == 1.0
    assert report["dynamic_range"]["agreement"] >= 0.99
    client, train = step_run(run["summary"], "train")
    names = {a.path for a in client.list_artifacts(train.info.run_id, C.TFLITE_DIR)}
    assert f"{C.TFLITE_DIR}/model_int8.tflite" in names
    assert train.data.metrics["tflite_float32_agreement"] == 1.0
    assert train.data.metrics["tflite_int8_size_bytes"] == report["int8"]["size_bytes"]


def test_tensorboard_logs_are_in_the_artifacts_and_kerasflow_tensorboard_fetches_them(run):
    from kerasflow.tracking.tensorboard import event_files

    assert event_files(run["model"] / C.TENSORBOARD_DIR)
    trials = run["model"].parent.parent / "hyperparameter-search" / "trials" / C.TENSORBOARD_DIR
    assert len({p.relative_to(trials).parts[0] for p in event_files(trials)}) == 3
    logdir = run["root"] / "tb"
    proc = kerasflow(
        "tensorboard", run["summary"]["mlflow_run_id"],
        "--tracking-uri", run["summary"]["tracking_uri"],
        "--logdir", str(logdir), "--download-only",
        cwd=run["root"],
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert event_files(logdir / "train") and event_files(logdir / "hyperparameter_search")
    assert f"tensorboard --logdir {logdir}" in proc.stdout
    missing = kerasflow(
        "tensorboard", "0" * 32, "--tracking-uri", run["summary"]["tracking_uri"],
        cwd=run["root"],
    )  # fmt: skip
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("kerasflow: error: no MLflow run")
