"""Models logged with MLflow's Keras flavor: LoggedModels with a signature and an input example.

The train step logs its final model here, so MLflow 3's model features apply: the LoggedModel is
linked to the train run, the registered version is created from it, and anyone can load the
champion with `mlflow.keras.load_model("models:/<name>@champion")` (or as a pyfunc) once
kerasflow's custom layers are imported. The SavedModel that TF Serving loads is exported from
the same weights and logged beside it as a run artifact.
"""

from __future__ import annotations

import os
import threading
import types
import warnings
from importlib import metadata
from typing import Any

MODEL_NAME = "model"


def _keras_flavor() -> Any:
    """mlflow.keras with a save_model that creates its folder first.

    mlflow.keras.save_model writes the input example before it creates the model folder, so
    logging with an input example fails with FileNotFoundError (MLflow 3.17); creating the folder
    first is all the flavor misses.
    """
    import mlflow.keras

    def save_model(path: str, **kwargs: Any) -> None:
        os.makedirs(path, exist_ok=True)
        mlflow.keras.save_model(path=path, **kwargs)

    return types.SimpleNamespace(
        __name__=mlflow.keras.__name__,
        save_model=save_model,
        load_model=mlflow.keras.load_model,
    )


def pip_requirements() -> list[str]:
    """What a loader needs: kerasflow (its layers) and the TensorFlow/Keras it was saved with.

    Given explicitly, so MLflow does not load the model again in a subprocess to infer them.
    """
    names = ("kerasflow", "tensorflow", "keras")
    return [f"{name}=={metadata.version(name)}" for name in names]


def prewarm() -> None:
    """Builds MLflow's map of installed distributions in a background thread.

    Logging a model checks the pip requirements against the environment, which scans every
    installed distribution once per process (seconds). Started when the train step starts, the
    scan overlaps training instead of adding to it.
    """

    def scan() -> None:
        try:
            from mlflow.utils import requirements_utils

            requirements_utils._init_modules_to_packages_map()
        except Exception:  # only a head start: logging builds the map itself when this fails
            pass

    threading.Thread(target=scan, name="mlflow-requirements-scan", daemon=True).start()


def example_rows(inputs: Any, rows: int = 5) -> Any:
    """The first `rows` rows of model inputs (an array, or a dict of arrays by input name)."""
    if isinstance(inputs, dict):
        return {name: values[:rows] for name, values in inputs.items()}
    return inputs[:rows]


def _as_schema_values(inputs: Any) -> Any:
    """Python-object arrays (strings) as NumPy unicode, which MLflow's schema inference takes;
    Keras itself wants the object arrays."""
    import numpy as np

    def convert(values: Any) -> Any:
        values = np.asarray(values)
        return values.astype(str) if values.dtype == object else values

    if isinstance(inputs, dict):
        return {name: convert(values) for name, values in inputs.items()}
    return convert(inputs)


def log_keras_model(model: Any, example_inputs: Any) -> Any:
    """Logs `model` with the Keras flavor under the active run; returns MLflow's ModelInfo.

    Args:
        model: the trained Keras model.
        example_inputs: a few rows of model inputs (an array, or a dict of arrays by input
            name); the signature is inferred from them and the model's answers to them.
    """
    import tensorflow as tf
    from mlflow.models import Model, infer_signature

    # A direct call: Keras' predict() refuses string arrays, tensors it takes.
    tensors = tf.nest.map_structure(tf.constant, example_inputs)
    outputs = tf.nest.map_structure(lambda t: t.numpy(), model(tensors, training=False))
    example_inputs = _as_schema_values(example_inputs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # schema hints about integer columns
        signature = infer_signature(example_inputs, outputs)
        return Model.log(
            artifact_path=None,
            name=MODEL_NAME,
            flavor=_keras_flavor(),
            model=model,
            signature=signature,
            input_example=example_inputs,
            pip_requirements=pip_requirements(),
        )


def load_keras_model(model_uri: str) -> Any:
    """Loads a model logged by log_keras_model (e.g. `models:/<name>@champion`)."""
    import mlflow.keras

    import kerasflow.modeling.layers  # noqa: F401  (registers the custom layers)

    return mlflow.keras.load_model(model_uri)
