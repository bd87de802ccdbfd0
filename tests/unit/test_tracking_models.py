"""The Keras flavor: a LoggedModel with signature and input example, loaded back by alias."""

import json

import keras
import mlflow
import numpy as np
import pytest

from kerasflow.modeling.layers import FillMissing
from kerasflow.tracking import models

pytestmark = pytest.mark.unit


def _model():
    keras.utils.set_random_seed(0)
    age = keras.Input((1,), name="age")
    size = keras.Input((1,), name="size")
    # A kerasflow layer: loading needs the custom layers registered, as served models do.
    filled = FillMissing([0.5])(age)
    joined = keras.layers.Concatenate()([filled, size])
    out = keras.layers.Dense(3, activation="softmax")(joined)
    return keras.Model([age, size], out)


def test_a_logged_model_is_linked_to_its_run_and_loads_back_by_alias():
    model = _model()
    rows = {
        "age": np.array([[1.0], [np.nan], [3.0]], "float32"),
        "size": np.ones((3, 1), "float32"),
    }
    with mlflow.start_run() as run:
        info = models.log_keras_model(model, rows)
    client = mlflow.MlflowClient()
    logged = client.get_logged_model(info.model_id)
    assert logged.source_run_id == run.info.run_id and logged.name == models.MODEL_NAME
    outputs = client.get_run(run.info.run_id).outputs.model_outputs
    assert [o.model_id for o in outputs] == [info.model_id]
    assert {i["name"] for i in json.loads(info.signature.inputs.to_json())} == {"age", "size"}
    assert info.saved_input_example_info is not None
    assert any(r.startswith("kerasflow==") for r in models.pip_requirements())

    version = mlflow.register_model(info.model_uri, "flavored")
    client.set_registered_model_alias("flavored", "champion", version.version)
    loaded = models.load_keras_model("models:/flavored@champion")
    np.testing.assert_allclose(loaded.predict(rows, verbose=0), model.predict(rows, verbose=0))
    pyfunc = mlflow.pyfunc.load_model("models:/flavored@champion")
    np.testing.assert_allclose(
        np.asarray(pyfunc.predict(rows)), model.predict(rows, verbose=0), rtol=1e-6
    )
