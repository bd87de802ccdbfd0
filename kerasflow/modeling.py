"""Keras model builders and their default search spaces, one per modality.

Every model starts with preprocessing layers built from the train-split statistics in the
bundle metadata (Normalization, StringLookup), so the exported model takes raw features.
"""

from __future__ import annotations

from typing import Any

from kerasflow import constants as C

LEARNING_RATES = (3e-4, 1e-3, 3e-3)


def build_inputs(meta: dict) -> tuple[dict[str, Any], Any]:
    """Named Keras inputs for `meta` and the preprocessed tensor they feed."""
    import keras
    from keras import layers

    stats = meta[C.META_NORMALIZATION]
    if meta[C.META_MODALITY] == "image":
        inp = keras.Input(shape=tuple(meta[C.META_IMAGE_SHAPE]), name=C.IMAGE_INPUT)
        s = stats[C.IMAGE_INPUT]
        x = layers.Normalization(axis=None, mean=s["mean"], variance=s["variance"])(inp)
        return {C.IMAGE_INPUT: inp}, x
    if meta[C.META_MODALITY] == "text":
        # One raw string per row; the vocabulary was fitted on the train split only.
        inp = keras.Input(shape=(1,), name=C.TEXT_INPUT, dtype="string")
        s = stats[C.TEXT_INPUT]
        vectorize = layers.TextVectorization(
            vocabulary=s["vocabulary"],
            output_sequence_length=int(s["sequence_length"]),
            name="vectorize",
        )
        return {C.TEXT_INPUT: inp}, vectorize(inp)
    inputs: dict[str, Any] = {}
    numeric, encoded = [], []
    for feat in meta[C.META_FEATURES]:
        name = feat["input"]
        if feat["kind"] == "numeric":
            inputs[name] = keras.Input(shape=(1,), name=name, dtype="float32")
            numeric.append(feat)
        else:
            inputs[name] = keras.Input(shape=(1,), name=name, dtype="string")
            lookup = layers.StringLookup(
                vocabulary=stats[name]["vocabulary"],
                output_mode="one_hot",
                num_oov_indices=1,
                name=f"lookup_{name}",
            )
            encoded.append(lookup(inputs[name]))
    plain = [f for f in numeric if "clip" not in stats[f["input"]]]
    clipped = [f for f in numeric if "clip" in stats[f["input"]]]
    parts = []
    if plain:
        parts.append(
            layers.Normalization(
                mean=[stats[f["input"]]["mean"] for f in plain],
                variance=[stats[f["input"]]["variance"] for f in plain],
                name="normalize",
            )(_stack(inputs, plain, "numeric"))
        )
    if clipped:
        parts.append(_clip_and_normalize(inputs, clipped, stats))
    parts += encoded
    x = layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    return inputs, x


def _stack(inputs: dict[str, Any], feats: list[dict], name: str) -> Any:
    from keras import layers

    if len(feats) == 1:
        return inputs[feats[0]["input"]]
    return layers.Concatenate(name=name)([inputs[f["input"]] for f in feats])


def _clip_and_normalize(inputs: dict[str, Any], feats: list[dict], stats: dict) -> Any:
    """Clips served values to the bounds cleaning clipped the training data to, then scales.

    Keras has no clip layer: values are mapped onto 0..1 between the bounds, a ReLU capped at 1
    clips them, and a second Normalization applies the train split's scaling in those units.
    """
    from keras import layers

    bounds = [stats[f["input"]]["clip"] for f in feats]
    lows = [float(low) for low, _ in bounds]
    spans = [max(float(high) - float(low), 1e-12) for low, high in bounds]
    scaled = [stats[f["input"]] for f in feats]
    x = layers.Normalization(mean=lows, variance=[s * s for s in spans], name="clip_bounds")(
        _stack(inputs, feats, "numeric_clipped")
    )
    x = layers.ReLU(max_value=1.0, name="clip")(x)
    return layers.Normalization(
        mean=[(t["mean"] - lo) / s for t, lo, s in zip(scaled, lows, spans, strict=True)],
        variance=[t["variance"] / (s * s) for t, s in zip(scaled, spans, strict=True)],
        name="normalize_clipped",
    )(x)


def build_head(meta: dict, x: Any) -> Any:
    """The output layer: softmax over classes, or a linear unit rescaled to the target's units."""
    from keras import layers

    if meta[C.META_TASK] == "classification":
        return layers.Dense(len(meta[C.META_CLASS_NAMES]), activation="softmax", name="output")(x)
    target = meta[C.META_NORMALIZATION]["__target__"]
    x = layers.Dense(1, name="output_scaled")(x)
    return layers.Rescaling(scale=target["std"], offset=target["mean"], name="output")(x)


def compile_model(model: Any, meta: dict, optimizer: str, learning_rate: float) -> Any:
    """Compiles with the task's loss and metrics."""
    import keras

    opt = {
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
        "adamw": keras.optimizers.AdamW,
    }[optimizer](learning_rate=learning_rate)
    if meta[C.META_TASK] == "classification":
        model.compile(opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model.compile(opt, loss="mse", metrics=["mae"])
    return model


def build_cnn(hp: Any, meta: dict) -> Any:
    """A small CNN for images: conv blocks, global pooling, a dense layer."""
    import keras
    from keras import layers

    inputs, x = build_inputs(meta)
    blocks = hp.Int("conv_blocks", 1, 2)
    filters = hp.Choice("filters", [32, 64])
    for i in range(blocks):
        x = layers.Conv2D(filters * (2**i), 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(filters * (2**i), 3, padding="same", activation="relu")(x)
        if min(x.shape[1:3]) >= 4:
            x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(hp.Choice("dropout", [0.0, 0.25, 0.5]))(x)
    x = layers.Dense(hp.Choice("dense_units", [64, 128]), activation="relu")(x)
    model = keras.Model(inputs, build_head(meta, x))
    return compile_model(model, meta, "adam", hp.Choice("learning_rate", list(LEARNING_RATES)))


def build_mlp(hp: Any, meta: dict) -> Any:
    """A multi-layer perceptron for tables."""
    import keras
    from keras import layers

    inputs, x = build_inputs(meta)
    activation = hp.Choice("activation", ["relu", "gelu"])
    for i in range(hp.Int("num_layers", 1, 3)):
        x = layers.Dense(hp.Choice(f"units_{i}", [32, 64, 128]), activation=activation)(x)
        x = layers.Dropout(hp.Choice(f"dropout_{i}", [0.0, 0.2, 0.4]))(x)
    model = keras.Model(inputs, build_head(meta, x))
    return compile_model(model, meta, "adam", hp.Choice("learning_rate", list(LEARNING_RATES)))


def build_model(hp: Any, meta: dict) -> Any:
    """Builds the default model for the bundle's modality from hyperparameters `hp`."""
    if meta[C.META_MODALITY] == "image":
        return build_cnn(hp, meta)
    return build_mlp(hp, meta)


def fixed_hyperparameters(values: dict[str, Any]) -> Any:
    """A KerasTuner HyperParameters object with every value fixed (for the final fit)."""
    import keras_tuner as kt

    hp = kt.HyperParameters()
    for name, value in values.items():
        hp.Fixed(name, value)
    return hp


def objective(meta: dict) -> tuple[str, str]:
    """The tuning objective and its direction for the bundle's task."""
    if meta[C.META_TASK] == "classification":
        return "val_accuracy", "max"
    return "val_loss", "min"


def make_dataset(inputs: Any, y: Any, batch_size: int, shuffle: bool = False, seed: int = 0) -> Any:
    """A batched tf.data pipeline over in-memory inputs.

    Keras 3 `fit` refuses NumPy string arrays, so string features travel as tf tensors.
    """
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((inputs, y)).cache()
    if shuffle:
        ds = ds.shuffle(len(y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
