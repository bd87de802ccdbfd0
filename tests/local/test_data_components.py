"""The three data components as KFP tasks under kfp.local: their new parameters and outputs."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.data import artifacts

pytestmark = pytest.mark.local


def messy_csv(path, n=120):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "row": np.arange(n),
            "x": rng.normal(0, 1, n).round(4).astype(object),
            "colour": rng.choice(["red", "blue"], n),
            "y": ["rare"] * 20 + ["common"] * (n - 20),
        }
    )
    frame.loc[[1, 2], "x"] = ["n/a", "?"]
    frame.to_csv(path, index=False)


def test_data_components_write_schema_profile_and_balanced_train(
    run_component, tmp_path, mlflow_store
):
    from kfp.dsl import Dataset

    from kerasflow.components.augment.component import augment
    from kerasflow.components.ingest_clean.component import ingest_clean
    from kerasflow.components.normalize_split.component import normalize_split

    messy_csv(tmp_path / "messy.csv")
    ingest = run_component(
        ingest_clean,
        settings={"missing_values": "mean", "outliers": "iqr", "outlier_action": "clip"},
        data=str(tmp_path / "messy.csv"),
        label="y",
        task="",
        tracking_uri=mlflow_store,
        experiment="local-data",
        kfp_run_id="local-data-1",
    )
    schema = json.loads((ingest.paths["schema"] / C.SCHEMA_FILE).read_text())
    assert schema["columns"]["row"]["role"] == "ignored"
    assert schema["columns"]["colour"]["categories"] == ["blue", "red"]
    assert '<img src="data:image/png;base64,' in ingest.paths["profile"].read_text()
    report = ingest.paths["report"].read_text()
    assert "| row | identifier (unique per row) |" in report
    assert "| x | 2 |" in report  # missing, imputed after the split
    run_id = ingest.parameters["Output"]
    common = {"tracking_uri": mlflow_store, "parent_run_id": run_id}
    split = run_component(
        normalize_split,
        {"dataset": (str(ingest.paths["dataset"]), Dataset)},
        settings={
            "val_fraction": 0.2,
            "test_fraction": 0.2,
            "scaling": "minmax",
            "imbalance": "smote",
        },
        seed=0,
        **common,
    )
    meta = artifacts.load_meta(split.paths["splits"])
    assert meta["scaling"] == "minmax" and "class_weights" not in meta
    assert "| x | 2 | mean |" in split.paths["report"].read_text()
    aug = run_component(
        augment,
        {"splits": (str(split.paths["splits"]), Dataset)},
        settings={"augment_factor": 1, "augment_methods": "mixup"},
        seed=0,
        **common,
    )
    train = artifacts.load_part(aug.paths["train_data"], "train")
    counts = np.bincount(train.frame["y"])
    assert counts[0] == counts[1] and len(train) == 2 * counts.max()
    client = mlflow.MlflowClient(mlflow_store)
    steps = client.search_runs(
        [client.get_run(run_id).info.experiment_id],
        f"tags.mlflow.parentRunId = '{run_id}'",
    )
    by_step = {r.data.tags[C.TAG_STEP]: r for r in steps}
    logged = {a.path for a in client.list_artifacts(by_step["ingest_clean"].info.run_id)}
    assert {"ingest_report.md", "schema.json", "profile.html", "profile.png"} <= logged
    assert by_step["ingest_clean"].data.metrics["junk_values"] == 2
    assert by_step["ingest_clean"].data.metrics["values_missing"] == 2
    fitted = by_step["normalize_split"]
    assert fitted.data.metrics["values_imputed"] == 2
    assert {"split_report.md", "cleaning_fitted_on_train.json"} <= {
        a.path for a in client.list_artifacts(fitted.info.run_id)
    }
    augmented = by_step["augment"]
    assert augmented.data.params["augment_methods"] == "mixup"
    assert "augment_summary.md" in {a.path for a in client.list_artifacts(augmented.info.run_id)}
