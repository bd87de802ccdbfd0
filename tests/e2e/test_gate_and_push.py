"""The promotion gate and the push, with real Keras models, MLflow's registry and the serving
runtime: a worse model is not blessed, a model failing infra validation is not pushed, a pushed
model becomes champion and is pinned, and a rollback brings the previous champion back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.components.deploy import core as deploy
from kerasflow.components.evaluate import core as evaluate
from kerasflow.components.ingest_clean.core import build_bundle
from kerasflow.components.normalize_split.core import split_bundle
from kerasflow.data import artifacts
from kerasflow.data.sources import RawData
from kerasflow.modeling import builders
from kerasflow.pipelines.cli import main
from kerasflow.settings import SplitSettings
from kerasflow.tracking import registry, runs

pytestmark = pytest.mark.e2e

HPARAMS = {
    "activation": "relu",
    "num_layers": 1,
    "units_0": 16,
    "dropout_0": 0.0,
    "learning_rate": 0.01,
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, mlflow_store):
    """Splits of a separable two-class table, a good and a useless model, a pipeline run."""
    import keras

    root = tmp_path_factory.mktemp("gate")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 2))
    frame = pd.DataFrame(
        {"a": x[:, 0], "b": x[:, 1], "y": np.where(x[:, 0] + x[:, 1] > 0, "pos", "neg")}
    )
    data, _ = build_bundle(RawData(frame=frame, label="y"))
    splits = split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0))
    artifacts.save(root / "splits", splits)
    meta = splits.meta
    train = splits.parts["train"]
    ds = builders.make_dataset(
        artifacts.model_inputs(meta, train), artifacts.targets(meta, train), 32
    )
    keras.utils.set_random_seed(0)
    good = builders.build_model(builders.fixed_hyperparameters(HPARAMS), meta)
    good.fit(ds, epochs=40, verbose=0)
    bad = builders.build_model(builders.fixed_hyperparameters(HPARAMS), meta)
    bad.get_layer("output").set_weights(
        [np.zeros(w.shape) for w in bad.get_layer("output").get_weights()]
    )
    dirs = {}
    for name, model in (("good", good), ("bad", bad)):
        dirs[name] = root / name
        dirs[name].mkdir()
        model.save(dirs[name] / C.KERAS_MODEL_FILE)
        model.export(str(dirs[name] / C.SAVED_MODEL_DIR), verbose=False)
    parent = runs.find_or_create_pipeline_run(mlflow_store, "gate-tests", "kfp-gate-1")
    return {
        "root": root,
        "splits": root / "splits",
        "dirs": dirs,
        "parent": parent,
        "uri": mlflow_store,
    }


def run_evaluate(
    world, which: str, model_name: str, allow_thresholds_only: bool = False, **settings
) -> evaluate.Evaluation:
    out = world["root"] / f"eval-{which}-{model_name}"
    return evaluate.run(
        settings={
            "thresholds": {"accuracy": 0.4},
            "model_name": model_name,
            "champion_tolerance": 0.01,
            "allow_thresholds_only": allow_thresholds_only,
            **settings,
        },
        model_dir=str(world["dirs"][which]),
        splits_dir=str(world["splits"]),
        report_path=str(out / "report.md"),
        predictions_dir=str(out / "preds"),
        tracking_uri=world["uri"],
        parent_run_id=world["parent"],
    )


def run_deploy(world, which: str, preds_of: str, serving: Path, model_name: str, **settings) -> str:
    return deploy.run(
        settings={"serving_dir": str(serving), "model_name": model_name, **settings},
        model_dir=str(world["dirs"][which]),
        splits_dir=str(world["splits"]),
        predictions_dir=str(world["root"] / f"eval-{preds_of}-{model_name}" / "preds"),
        tracking_uri=world["uri"],
        parent_run_id=world["parent"],
    )


def test_first_model_is_judged_by_thresholds_only(world):
    result = run_evaluate(world, "good", "gate-first")
    assert result.blessed and result.metrics["accuracy"] > 0.9
    assert "no champion yet: thresholds only" in result.reasons


def test_push_registers_champion_pins_config_and_rollback_returns(world, tmp_path):
    serving = tmp_path / "serving"
    name = "gate-push"
    run_evaluate(world, "good", name)
    path1 = run_deploy(world, "good", "good", serving, name)
    assert path1 == str(serving / name / "1")
    assert (serving / name / "1" / "assets.extra" / "tf_serving_warmup_requests").is_file()
    champion = registry.get_champion(world["uri"], name)
    assert champion.serving_version == 1
    config = (serving / "models.config").read_text()
    assert "versions: 1" in config and "version_labels" not in config
    # The same model again (a retried step) reuses its version and its registry entry.
    assert run_deploy(world, "good", "good", serving, name) == path1
    assert registry.champion_history(world["uri"], name) == [1]
    # Another export (the same model with one more file) is the next version.
    again = tmp_path / "good-again"
    shutil.copytree(world["dirs"]["good"], again)
    (again / C.SAVED_MODEL_DIR / "assets").mkdir(exist_ok=True)
    (again / C.SAVED_MODEL_DIR / "assets" / "note.txt").write_text("retrained")
    path2 = run_deploy({**world, "dirs": {"again": again}}, "again", "good", serving, name)
    assert path2 == str(serving / name / "2")
    assert registry.get_champion(world["uri"], name).serving_version == 2
    assert "versions: 2" in (serving / "models.config").read_text()
    # tags link the pipeline run, the data and the serving version
    import mlflow

    mv = mlflow.MlflowClient(world["uri"]).get_model_version(name, "2")
    assert mv.tags[C.TAG_KFP_RUN_ID] == "kfp-gate-1"
    assert mv.tags["kerasflow.mlflow_run_id"] == world["parent"]
    assert mv.tags["kerasflow.data_hash"] == artifacts.load_meta(world["splits"])[C.META_DATA_HASH]
    # rollback: the previous champion serves again
    common = ["--model-name", name, "--serving-dir", str(serving), "--tracking-uri", world["uri"]]
    assert main(["rollback", *common]) == 0
    assert registry.get_champion(world["uri"], name).serving_version == 1
    assert "versions: 1" in (serving / "models.config").read_text()
    assert main(["rollback", *common, "--to", "2"]) == 0
    assert registry.get_champion(world["uri"], name).serving_version == 2
    assert main(["rollback", *common, "--to", "9"]) == 2


def test_a_canary_deploy_serves_beside_stable_and_leaves_the_champion(world, tmp_path, capsys):
    serving, name = tmp_path / "serving", "gate-canary"
    run_evaluate(world, "good", name)
    # Nothing served yet: the first deploy pins its version and becomes champion as usual.
    assert run_deploy(world, "good", "good", serving, name, canary=True).endswith("/1")
    again = tmp_path / "good-again"
    shutil.copytree(world["dirs"]["good"], again)
    (again / C.SAVED_MODEL_DIR / "assets").mkdir(exist_ok=True)
    (again / C.SAVED_MODEL_DIR / "assets" / "note.txt").write_text("retrained")
    capsys.readouterr()
    retrained = {**world, "dirs": {"again": again}}
    path = run_deploy(retrained, "again", "good", serving, name, canary=True)
    assert path == str(serving / name / "2")
    assert "is the canary beside `stable`" in capsys.readouterr().out
    assert registry.served_versions(str(serving), name) == ([1, 2], {"stable": 1})
    assert registry.get_champion(world["uri"], name).serving_version == 1
    assert registry.registry_version_for(world["uri"], name, 2) == 2


def test_worse_model_than_the_champion_is_not_blessed(world, tmp_path):
    name = "gate-regress"
    run_evaluate(world, "good", name)
    run_deploy(world, "good", "good", tmp_path / "serving", name)
    result = run_evaluate(world, "bad", name)
    assert result.metrics["accuracy"] >= 0.4  # passes the absolute threshold...
    assert not result.blessed  # ...but regresses against the champion
    assert any("REGRESSES against champion" in r for r in result.reasons)
    again = run_evaluate(world, "good", name)
    assert again.blessed and any("no regression against champion" in r for r in again.reasons)


def test_model_failing_infra_validation_is_not_pushed(world, tmp_path, capsys):
    serving = tmp_path / "serving"
    run_evaluate(world, "bad", "gate-infra")
    # predictions recorded by evaluation do not match what the export answers
    with pytest.raises(SystemExit) as exc:
        run_deploy(world, "good", "bad", serving, "gate-infra")
    assert exc.value.code == 2
    assert "served predictions differ" in capsys.readouterr().err
    assert not (serving / "gate-infra").exists() or not any((serving / "gate-infra").iterdir())
    assert registry.get_champion(world["uri"], "gate-infra") is None


def test_corrupt_export_is_not_pushed(world, tmp_path, capsys):

    broken = world["root"] / "broken"
    shutil.copytree(world["dirs"]["good"], broken)
    (broken / C.SAVED_MODEL_DIR / "saved_model.pb").write_bytes(b"not a saved model")
    world["dirs"]["broken"] = broken
    run_evaluate(world, "good", "gate-corrupt")
    serving = tmp_path / "serving"
    with pytest.raises(SystemExit):
        run_deploy(world, "broken", "good", serving, "gate-corrupt")
    err = capsys.readouterr().err
    assert "kerasflow: error in deploy" in err and "saved_model.pb" in err
    assert deploy.existing_versions(str(serving / "gate-corrupt")) == []


def test_slices_report_metrics_per_value(world):
    splits = artifacts.load(world["splits"], ("test",))
    test = splits.parts["test"]
    test.frame["bucket"] = np.where(test.frame["a"] > 0, "high", "low")
    outputs = np.tile([0.2, 0.8], (len(test), 1))
    slices = evaluate.slice_metrics(splits.meta, test, outputs, "bucket")
    assert set(slices) == {"high", "low"}
    assert sum(s["rows"] for s in slices.values()) == len(test)
    with pytest.raises(Exception, match="cannot slice by 'nope'"):
        evaluate.slice_metrics(splits.meta, test, outputs, "nope")
    json.dumps(slices)


@pytest.mark.faults
def test_a_champion_that_cannot_be_loaded_closes_the_gate(world, tmp_path):
    import mlflow

    name = "gate-corrupt-champion"
    bogus = tmp_path / "bogus"
    bogus.mkdir()
    (bogus / C.KERAS_MODEL_FILE).write_bytes(b"not a keras file")
    version = registry.register_version(world["uri"], name, str(bogus), world["parent"], {})
    mlflow.MlflowClient(world["uri"]).set_registered_model_alias(name, "champion", str(version))
    closed = run_evaluate(world, "good", name)
    assert closed.metrics["accuracy"] > 0.9  # the thresholds alone would bless it
    assert not closed.blessed
    assert any("champion could not be evaluated" in r for r in closed.reasons)
    allowed = run_evaluate(world, "good", name, allow_thresholds_only=True)
    assert allowed.blessed and any("thresholds alone" in r for r in allowed.reasons)


@pytest.mark.faults
def test_a_registry_that_cannot_answer_closes_the_gate(world, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.MlflowClient(world["uri"]).create_registered_model("gate-no-alias")
    assert registry.get_champion(world["uri"], "gate-no-alias") is None  # no champion yet

    class Unreachable:
        def get_model_version_by_alias(self, *_args):
            raise MlflowException(
                "API request to http://mlflow:5000 failed: connection refused",
                error_code="INTERNAL_ERROR",
            )

    monkeypatch.setattr(registry, "_client", lambda _uri: Unreachable())
    with pytest.raises(registry.RegistryUnavailable, match="connection refused"):
        registry.get_champion(world["uri"], "gate-registry-down")
    result = run_evaluate(world, "good", "gate-registry-down")
    assert not result.blessed
    assert any("RegistryUnavailable" in r and "connection refused" in r for r in result.reasons)
