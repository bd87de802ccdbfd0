"""Datasets logged as MLflow run inputs: name, source, digest, schema and profile."""

import mlflow
import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.tracking import datasets

pytestmark = pytest.mark.unit


def _inputs(run_id):
    inputs = mlflow.MlflowClient().get_run(run_id).inputs.dataset_inputs
    return {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}


def test_table_parts_are_inputs_with_kerasflow_digests_and_the_label_as_target(tmp_path):
    frame = pd.DataFrame({"x": [0.5, 1.5, 2.5], "colour": ["red", "blue", "red"], "y": [0, 1, 0]})
    parts = {"train": artifacts.Part(frame=frame), "test": artifacts.Part(frame=frame.head(1))}
    meta = {C.META_LABEL: "y"}
    source = str(tmp_path / "rows.csv")
    with mlflow.start_run() as run:
        datasets.log_parts(parts, meta, source)
    logged = _inputs(run.info.run_id)
    assert set(logged) == {"train", "test"}
    train = logged["train"].dataset
    assert train.name == "rows-train"
    assert train.digest == artifacts.hash_part(parts["train"])
    assert train.digest != logged["test"].dataset.digest
    assert source in train.source and train.source_type == "local"
    assert '"num_rows": 3' in train.profile
    assert "colour" in train.schema


def test_image_arrays_from_a_builtin_set_get_a_code_source_and_shapes_in_the_profile():
    part = artifacts.Part(x=np.zeros((4, 8, 8, 1), "float32"), y=np.array([0, 1, 2, 3]))
    with mlflow.start_run() as run:
        datasets.log_parts({"clean": part}, {C.META_LABEL: "label"}, "builtin:digits")
    dataset = _inputs(run.info.run_id)["clean"].dataset
    assert dataset.name == "digits-clean"
    assert dataset.source_type == "code" and "builtin:digits" in dataset.source
    assert "[4, 8, 8, 1]" in dataset.profile.replace(" ", "").replace(",", ", ")


@pytest.mark.parametrize(
    ("uri", "name"),
    [("builtin:iris", "iris"), ("gs://b/data/rows.parquet", "rows"), ("/data/images/", "images")],
)
def test_dataset_names_come_from_the_source(uri, name):
    assert datasets.dataset_name(uri) == name


def test_a_dataset_another_run_inserted_meanwhile_is_linked_on_a_second_try(monkeypatch):
    # Two runs of the same data at once: both look the dataset up, both miss it, and the
    # second insert breaks the store's unique key (experiment, name, digest).
    from mlflow.exceptions import MlflowException

    part = artifacts.Part(x=np.ones((3, 2), "float32"), y=np.array([0, 1, 0]))
    with mlflow.start_run() as other:
        datasets.log_parts({"clean": part}, {}, "builtin:iris")
    real, calls = mlflow.log_input, []

    def racing(dataset, context=None, **kwargs):
        calls.append(context)
        if len(calls) == 1:
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                "datasets.name, datasets.digest"
            )
        return real(dataset, context=context, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run() as run:
        datasets.log_parts({"clean": part}, {}, "builtin:iris")
    assert calls == ["clean", "clean"]
    mine = _inputs(run.info.run_id)["clean"].dataset
    assert mine.digest == _inputs(other.info.run_id)["clean"].dataset.digest


def test_other_store_errors_are_not_retried(monkeypatch):
    from mlflow.exceptions import MlflowException

    calls = []

    def failing(dataset, context=None, **kwargs):
        calls.append(context)
        raise MlflowException("the store is read-only")

    monkeypatch.setattr(mlflow, "log_input", failing)
    part = artifacts.Part(x=np.ones((3, 2), "float32"), y=np.array([0, 1, 0]))
    with mlflow.start_run(), pytest.raises(MlflowException, match="read-only"):
        datasets.log_parts({"clean": part}, {}, "builtin:iris")
    assert calls == ["clean"]
