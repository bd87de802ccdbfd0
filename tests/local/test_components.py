"""Each component as a KFP task under kfp.local, chained on breast_cancer with a tiny budget."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.pipelines.cluster_settings import STEPS

pytestmark = pytest.mark.local


@pytest.fixture(scope="module")
def chain(run_component, tmp_path_factory, mlflow_store):
    from kfp.dsl import Artifact, Dataset, Model

    from kerasflow.components.augment.component import augment
    from kerasflow.components.deploy.component import deploy
    from kerasflow.components.evaluate.component import evaluate
    from kerasflow.components.hyperparameter_search.component import hyperparameter_search
    from kerasflow.components.ingest_clean.component import ingest_clean
    from kerasflow.components.normalize_split.component import normalize_split
    from kerasflow.components.train.component import train

    serving = tmp_path_factory.mktemp("serving")
    t: dict = {"serving": serving}
    common = {"tracking_uri": mlflow_store}
    t["ingest"] = run_component(
        ingest_clean,
        settings={},
        data="builtin:breast_cancer",
        label="",
        task="",
        experiment="local-tier",
        kfp_run_id="local-1",
        **common,
    )
    t["run_id"] = common["parent_run_id"] = t["ingest"].parameters["Output"]
    t["split"] = run_component(
        normalize_split,
        {"dataset": (str(t["ingest"].paths["dataset"]), Dataset)},
        settings={"val_fraction": 0.2, "test_fraction": 0.2},
        seed=1,
        **common,
    )
    splits = (str(t["split"].paths["splits"]), Dataset)
    t["augment"] = run_component(
        augment, {"splits": splits}, settings={"augment_factor": 1}, seed=1, **common
    )
    train_data = (str(t["augment"].paths["train_data"]), Dataset)
    t["search"] = run_component(
        hyperparameter_search,
        {"splits": splits, "train_data": train_data},
        settings={"max_epochs": 2, "batch_size": 32, "patience": 1},
        tuner="random",
        max_trials=2,
        seed=1,
        build_model="",
        worker_pods=0,
        pipeline_root="",
        run_id="",
        **common,
    )
    hps = (str(t["search"].paths["best_hyperparameters"]), Artifact)
    trials = (str(t["search"].paths["trials"]), Artifact)
    t["train"] = run_component(
        train,
        {"splits": splits, "train_data": train_data, "best_hyperparameters": hps, "trials": trials},
        settings={"batch_size": 32, "patience": 2},
        final_epochs=8,
        seed=1,
        build_model="",
        model_name="cancer",
        serving_dir="",
        **common,
    )
    model = (str(t["train"].paths["model"]), Model)
    t["evaluate"] = run_component(
        evaluate,
        {"model": model, "splits": splits},
        settings={"champion_tolerance": 0.01},
        thresholds={"accuracy": 0.8},
        model_name="cancer",
        **common,
    )
    preds = (str(t["evaluate"].paths["predictions"]), Dataset)
    t["deploy"] = run_component(
        deploy,
        {"model": model, "splits": splits, "predictions": preds},
        settings={},
        serving_dir=str(serving),
        model_name="cancer",
        **common,
    )
    return t


def test_ingest_writes_a_bundle_and_a_report(chain):
    path = chain["ingest"].paths["dataset"]
    meta = artifacts.load_meta(path)
    assert meta[C.META_TASK] == "classification" and meta[C.META_ROWS] == 569
    report = Path(chain["ingest"].paths["report"]).read_text()
    assert "| rows_in | 569 |" in report and "## Schema" in report
    assert chain["ingest"].paths["schema"].exists()
    assert "<img" in chain["ingest"].paths["profile"].read_text()


def test_split_and_augment(chain):
    meta = artifacts.load_meta(chain["split"].paths["splits"])
    sizes = meta["split_sizes"]
    assert sum(sizes.values()) == 569 and sizes["test"] == pytest.approx(114, abs=1)
    train = artifacts.load_part(chain["augment"].paths["train_data"], "train")
    assert len(train) == 2 * sizes["train"]


def test_search_writes_best_hyperparameters(chain):
    best = json.loads(Path(chain["search"].paths["best_hyperparameters"]).read_text())
    assert {"learning_rate", "num_layers", "activation"} <= set(best)
    assert "## Trials" in Path(chain["search"].paths["summary"]).read_text()
    ranked = json.loads((Path(chain["search"].paths["trials"]) / C.RANKED_TRIALS_FILE).read_text())
    assert ranked[0]["hyperparameters"] == best  # the finished trials, best first
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)


def test_train_exports_keras_and_saved_model(chain):
    model_dir = Path(chain["train"].paths["model"])
    assert (model_dir / C.KERAS_MODEL_FILE).is_file()
    assert (model_dir / C.SAVED_MODEL_DIR / "saved_model.pb").is_file()
    assert "<img" in Path(chain["train"].paths["history"]).read_text()
    assert list((model_dir / C.TENSORBOARD_DIR).rglob("events.out.tfevents.*"))
    assert not (model_dir / C.ENSEMBLE_FILE).exists() and not (model_dir / C.TFLITE_DIR).exists()


def test_evaluate_blesses_and_logs_kfp_metrics(chain):
    assert chain["evaluate"].parameters["Output"] is True
    metrics = chain["evaluate"].metadata["metrics"]
    assert metrics["accuracy"] > 0.8 and 0.5 < metrics["roc_auc"] <= 1.0
    cm = chain["evaluate"].metadata["classification"]["confusionMatrix"]
    assert sum(sum(row["row"]) for row in cm["rows"]) == 114
    preds = np.load(Path(chain["evaluate"].paths["predictions"], C.PREDICTIONS_FILE))
    assert preds["outputs"].shape == (114, 2)


def test_deploy_publishes_version_one(chain):
    assert chain["deploy"].parameters["Output"] == str(chain["serving"] / "cancer" / "1")
    assert (chain["serving"] / "cancer" / "1" / "saved_model.pb").is_file()


def test_mlflow_holds_pipeline_step_and_trial_runs(chain, mlflow_store):
    client = mlflow.MlflowClient(mlflow_store)
    parent = client.get_run(chain["run_id"])
    assert parent.data.tags[C.TAG_KIND] == C.KIND_PIPELINE
    assert parent.data.tags[C.TAG_MODEL_VERSION] == "1"
    exp = parent.info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{chain['run_id']}'")
    steps = {r.data.tags[C.TAG_STEP] for r in children}
    assert steps == set(STEPS)
    search = next(r for r in children if r.data.tags[C.TAG_STEP] == "hyperparameter_search")
    trials = client.search_runs([exp], f"tags.mlflow.parentRunId = '{search.info.run_id}'")
    assert len(trials) == 2
    assert all(r.data.tags[C.TAG_KIND] == C.KIND_TRIAL for r in trials)
    assert all("learning_rate" in r.data.params for r in trials)
    assert all(r.info.status == "FINISHED" for r in children + trials)
