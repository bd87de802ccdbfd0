"""Search spaces: YAML specs, defaults per modality, model families built from them."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.modeling import builders, search_space
from kerasflow.runtime import budget
from kerasflow.runtime.errors import UserError
from kerasflow.settings import RunSettings

pytestmark = pytest.mark.unit


def tabular_meta(task="classification"):
    meta = {
        "modality": "tabular",
        "task": task,
        "label": "y",
        "features": [{"name": f"x{i}", "input": f"x{i}", "kind": "numeric"} for i in range(3)],
        "normalization": {f"x{i}": {"mean": 0.0, "variance": 1.0} for i in range(3)},
        "class_names": ["a", "b"],
    }
    if task == "regression":
        meta["normalization"]["__target__"] = {"mean": 0.0, "std": 1.0}
    return meta


def image_meta():
    return {
        "modality": "image",
        "task": "classification",
        "image_shape": [8, 8, 1],
        "normalization": {"image": {"mean": 0.5, "variance": 0.25}},
        "class_names": ["0", "1", "2"],
    }


def text_meta():
    return {
        "modality": "text",
        "task": "classification",
        "normalization": {"text": {"vocabulary": ["good", "bad", "movie"], "sequence_length": 6}},
        "class_names": ["neg", "pos"],
    }


@pytest.mark.parametrize(
    ("raw", "spec"),
    [
        ("adam", {"fixed": "adam"}),
        (["adam", "sgd"], {"choice": ["adam", "sgd"]}),
        (
            {"min": "1e-4", "max": 0.01, "sampling": "log"},
            {"min": 1e-4, "max": 0.01, "sampling": "log"},
        ),
    ],
)
def test_parse_spec_forms(raw, spec):
    name = "optimizer" if not isinstance(raw, dict) else "learning_rate"
    assert search_space.parse_spec(name, raw) == spec


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"unitz": [32]}, "unknown search_space key 'unitz'"),
        ({"optimizer": ["adam", "adagrad"]}, "unknown value 'adagrad'"),
        ({"dropout": 1.0}, "outside"),
        ({"units": {"min": 64, "max": 32}}, "min must be below max"),
        ({"units": {"min": 8, "max": 64, "step": 1.5}}, "step must be an integer"),
        ({"learning_rate": {"min": 0, "max": 0.1, "sampling": "log"}}, "outside"),
        ({"batch_norm": {"min": 0, "max": 1}}, "takes a value or a list"),
        ({"units": []}, "empty list"),
        ({"num_layers": "two"}, "not a valid int"),
        ("units: 3", "must be a mapping"),
    ],
)
def test_bad_specs_raise_one_clear_user_error(overrides, message):
    with pytest.raises(UserError, match=message):
        search_space.validate_overrides(overrides)
    with pytest.raises(UserError, match=message):
        RunSettings.from_values({"search_space": overrides})


def test_defaults_cover_every_dimension_and_overrides_win():
    for modality in search_space.FAMILIES:
        space = search_space.default_space(modality)
        for name in (
            "family",
            "num_layers",
            "units",
            "activation",
            "dropout",
            "l1",
            "l2",
            "batch_norm",
            "initializer",
            "optimizer",
            "learning_rate",
        ):
            assert name in space, (modality, name)
    space = search_space.resolve_space(
        "image", {"optimizer": ["adam", "rmsprop", "sgd", "adamw"], "batch_size": [16, 32]}
    )
    assert space["optimizer"] == {"choice": ["adam", "rmsprop", "sgd", "adamw"]}
    assert {"optimizer", "batch_size", "learning_rate"} <= set(search_space.searched_names(space))
    with pytest.raises(UserError, match="lstm does not fit image data"):
        search_space.resolve_space("image", {"family": "lstm"})


def test_family_specific_hyperparameters_are_conditional():
    import keras_tuner as kt

    space = search_space.resolve_space("image", {"family": ["mlp", "cnn"]})
    hp = kt.HyperParameters()
    values = search_space.declare(hp, space)
    assert values["family"] == "mlp" and "filters" not in values
    names = {p.name: p for p in hp.space}
    assert names["filters"].conditions  # only active when family is cnn
    fixed = kt.HyperParameters()
    fixed.Fixed("family", "cnn")
    assert search_space.declare(fixed, space)["filters"] == 32


@pytest.mark.parametrize("family", ["mlp", "cnn"])
def test_image_families_build_and_predict(family):
    values = {
        "family": family,
        "num_layers": 2,
        "units": 16,
        "filters": 8,
        "activation": "gelu",
        "dropout": 0.1,
        "l1": 0.0,
        "l2": 1e-4,
        "batch_norm": True,
        "initializer": "he_normal",
        "optimizer": "rmsprop",
        "learning_rate": 1e-3,
    }
    model = builders.build_from_values(values, image_meta())
    out = model.predict({"image": np.zeros((2, 8, 8, 1), "float32")}, verbose=0)
    assert out.shape == (2, 3)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "BatchNormalization" in kinds
    assert ("Conv2D" in kinds) == (family == "cnn")
    assert type(model.optimizer).__name__ == "RMSprop"
    assert model.losses  # the L2 penalty is part of the loss


@pytest.mark.parametrize("family", ["conv1d", "lstm"])
def test_text_families_take_raw_strings(family):
    import tensorflow as tf

    values = {
        "family": family,
        "embedding_dim": 8,
        "num_layers": 2,
        "units": 8,
        "activation": "relu",
        "dropout": 0.0,
        "l1": 0.0,
        "l2": 0.0,
        "batch_norm": False,
        "initializer": "glorot_uniform",
        "optimizer": "adamw",
        "learning_rate": 1e-3,
    }
    model = builders.build_from_values(values, text_meta())
    embedding = next(la for la in model.layers if type(la).__name__ == "Embedding")
    assert embedding.input_dim == 3 + 2  # vocabulary, padding and out-of-vocabulary
    out = model.predict({"text": tf.constant([["good movie"], ["bad"]])}, verbose=0)
    assert out.shape == (2, 2)
    assert ("LSTM" in {type(la).__name__ for la in model.layers}) == (family == "lstm")


def test_text_body_on_token_ids_from_a_hand_made_input():
    import keras

    ids = keras.Input(shape=(6,), dtype="int64")
    values = {
        "family": "conv1d",
        "embedding_dim": 4,
        "num_layers": 1,
        "units": 4,
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": False,
    }
    x = builders.build_text(ids, values, text_meta())
    assert tuple(x.shape) == (None, 4)


def test_regression_default_model_trains_with_sgd():
    import keras_tuner as kt

    hp = kt.HyperParameters()
    hp.Fixed("optimizer", "sgd")
    model = builders.build_model(hp, tabular_meta("regression"))
    assert type(model.optimizer).__name__ == "SGD"
    x = {f"x{i}": np.random.default_rng(i).normal(size=(16, 1)).astype("float32") for i in range(3)}
    hist = model.fit(x, np.zeros(16, "float32"), epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])


def test_load_build_function_from_a_file(tmp_path):
    path = tmp_path / "mymodel.py"
    path.write_text("def build(hp):\n    return hp\n\nVALUE = 3\n")
    fn = search_space.load_build_function(f"{path}:build")
    assert fn("x") == "x"
    for ref, message in [
        ("nocolon", "not of the form module:function"),
        (f"{path}:missing", "has no function 'missing'"),
        (f"{path}:VALUE", "has no function 'VALUE'"),
        ("no_such_module_kf:build", "cannot import 'no_such_module_kf'"),
        (f"{tmp_path}/absent.py:build", "file not found"),
    ]:
        with pytest.raises(UserError, match=message):
            search_space.load_build_function(ref)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("", 0.0),
        ("90", 90.0),
        ("90s", 90.0),
        ("10m", 600.0),
        ("1.5h", 5400.0),
        ("1h30m", 5400.0),
        (45, 45.0),
    ],
)
def test_parse_time_budget(text, seconds):
    assert budget.parse_time_budget(text) == seconds


@pytest.mark.parametrize("text", ["10 minutes", "m10", "1h1h", "5x", "-3m", True])
def test_bad_time_budget(text):
    with pytest.raises(UserError, match="time budget"):
        budget.parse_time_budget(text)


def test_grid_search_gets_three_points_per_open_range():
    space = search_space.resolve_space(
        "tabular",
        {"units": {"min": 32, "max": 512}, "dropout": {"min": 0.0, "max": 0.5, "step": 0.25}},
    )
    grid = search_space.grid_ready(space)
    assert grid["units"] == {"choice": [272, 32, 512]}
    assert grid["learning_rate"] == {"choice": [0.003, 0.0003, 0.03]}  # geometric middle first
    assert grid["dropout"] == space["dropout"]  # a stepped range is a grid already
    assert grid["optimizer"] == space["optimizer"]
