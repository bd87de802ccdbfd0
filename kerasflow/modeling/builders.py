"""Keras model builders: preprocessing inputs, one body per model family, the task's head.

Every model starts with preprocessing layers built from the train-split statistics in the
bundle metadata (Normalization, StringLookup), so the exported model takes raw features.
"""

from __future__ import annotations

from typing import Any

from kerasflow import constants as C


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
        from kerasflow.modeling.layers import standardize_text

        # One raw string per row; the vocabulary was fitted on the train split only, on words
        # standardized as `standardize_text` standardizes served text (data.textprep).
        inp = keras.Input(shape=(1,), name=C.TEXT_INPUT, dtype="string")
        s = stats[C.TEXT_INPUT]
        vectorize = layers.TextVectorization(
            vocabulary=s["vocabulary"],
            standardize=standardize_text,
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
            encoded.append(lookup(_clean_category(inputs[name], stats[name], name)))
    plain = [f for f in numeric if "clip" not in stats[f["input"]]]
    clipped = [f for f in numeric if "clip" in stats[f["input"]]]
    parts = []
    if plain:
        parts.append(
            layers.Normalization(
                mean=[stats[f["input"]]["mean"] for f in plain],
                variance=[stats[f["input"]]["variance"] for f in plain],
                name="normalize",
            )(_fill_missing(_stack(inputs, plain, "numeric"), plain, stats, "fill_missing"))
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


def load_model(path: Any, compile: bool = True) -> Any:
    """Loads a `.keras` model saved by kerasflow (its custom layers registered first)."""
    import keras

    import kerasflow.modeling.layers  # noqa: F401  (registers the custom layers for deserialization)

    return keras.models.load_model(path, compile=compile)


def _fill_missing(x: Any, feats: list[dict], stats: dict, name: str) -> Any:
    """NaN in served numbers becomes the value training imputed with (`fill`, fitted on the
    train split); metadata from before `fill` existed gives the Normalization mean."""
    from kerasflow.modeling.layers import FillMissing

    fills = [stats[f["input"]].get("fill", stats[f["input"]]["mean"]) for f in feats]
    return FillMissing(fills, name=name)(x)


def _clean_category(x: Any, stats: dict, name: str) -> Any:
    """Served categories cleaned as the training data were (see layers.CleanCategory);
    metadata from before the train split recorded a `fill` passes values through."""
    if "fill" not in stats:
        return x
    from kerasflow.data.cleaning import JUNK
    from kerasflow.modeling.layers import CleanCategory

    return CleanCategory(stats["fill"], sorted(JUNK), name=f"clean_{name}")(x)


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
    stacked = _stack(inputs, feats, "numeric_clipped")
    x = layers.Normalization(mean=lows, variance=[s * s for s in spans], name="clip_bounds")(
        _fill_missing(stacked, feats, stats, "fill_missing_clipped")
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


def make_optimizer(name: str, learning_rate: Any) -> Any:
    """A Keras optimizer by name; `learning_rate` is a float or a schedule."""
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "rmsprop": keras.optimizers.RMSprop,
        "sgd": keras.optimizers.SGD,
        "adamw": keras.optimizers.AdamW,
    }
    kwargs: dict[str, Any] = {"learning_rate": learning_rate}
    if name == "sgd":
        # Plain SGD crawls at the learning rates the other optimizers share.
        kwargs["momentum"] = 0.9
    return classes[name](**kwargs)


def compile_model(model: Any, meta: dict, optimizer: str, learning_rate: Any) -> Any:
    """Compiles with the task's loss and metrics."""
    opt = make_optimizer(optimizer, learning_rate)
    if meta[C.META_TASK] == "classification":
        model.compile(opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model.compile(opt, loss="mse", metrics=["mae"])
    return model


def _regularizer(values: dict) -> Any:
    import keras

    l1, l2 = float(values.get("l1", 0.0)), float(values.get("l2", 0.0))
    return keras.regularizers.L1L2(l1=l1, l2=l2) if (l1 or l2) else None


def hidden_layer(x: Any, layer: Any, values: dict) -> Any:
    """A hidden layer, then batch normalization (when asked), then the activation."""
    from keras import layers

    x = layer(x)
    if values.get("batch_norm"):
        x = layers.BatchNormalization()(x)
    return layers.Activation(values["activation"])(x)


def dense_weights(values: dict) -> dict[str, Any]:
    return {
        "kernel_initializer": values.get("initializer", "glorot_uniform"),
        "kernel_regularizer": _regularizer(values),
    }


def build_cnn(x: Any, values: dict, meta: dict) -> Any:
    """A small CNN body for images: conv blocks (filters doubling), flatten, a dense layer."""
    from keras import layers

    for i in range(int(values["num_layers"])):
        for _ in range(2):
            conv = layers.Conv2D(
                int(values["filters"]) * 2**i, 3, padding="same", **dense_weights(values)
            )
            x = hidden_layer(x, conv, values)
        if min(x.shape[1:3]) >= 4:
            x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(float(values["dropout"]))(x)
    return hidden_layer(x, layers.Dense(int(values["units"]), **dense_weights(values)), values)


def build_mlp(x: Any, values: dict, meta: dict) -> Any:
    """A multi-layer perceptron body (images are flattened first)."""
    from keras import layers

    if len(x.shape) > 2:
        x = layers.Flatten()(x)
    for _ in range(int(values["num_layers"])):
        x = hidden_layer(x, layers.Dense(int(values["units"]), **dense_weights(values)), values)
        x = layers.Dropout(float(values["dropout"]))(x)
    return x


def build_text(x: Any, values: dict, meta: dict) -> Any:
    """Embedding, then Conv1D blocks and global max pooling, or stacked LSTMs, for token ids."""
    from keras import layers

    vocabulary = meta[C.META_NORMALIZATION][C.TEXT_INPUT]["vocabulary"]
    lstm = values["family"] == "lstm"
    # Ids 0 and 1 are padding and out-of-vocabulary; LSTMs skip the padding via the mask.
    x = layers.Embedding(len(vocabulary) + 2, int(values["embedding_dim"]), mask_zero=lstm)(x)
    layers_n = int(values["num_layers"])
    for i in range(layers_n):
        if lstm:
            x = layers.LSTM(
                int(values["units"]), return_sequences=i < layers_n - 1, **dense_weights(values)
            )(x)
        else:
            conv = layers.Conv1D(int(values["units"]), 5, padding="same", **dense_weights(values))
            x = hidden_layer(x, conv, values)
    if not lstm:
        x = layers.GlobalMaxPooling1D()(x)
    return layers.Dropout(float(values["dropout"]))(x)


BODIES = {"mlp": build_mlp, "cnn": build_cnn, "conv1d": build_text, "lstm": build_text}


def build_from_values(values: dict, meta: dict) -> Any:
    """Builds and compiles the model that hyperparameter `values` describe."""
    import keras

    if values["family"] == "transfer":
        from kerasflow.modeling.transfer import build_transfer_model

        return build_transfer_model(values, meta)
    inputs, x = build_inputs(meta)
    x = BODIES[values["family"]](x, values, meta)
    model = keras.Model(inputs, build_head(meta, x))
    return compile_model(model, meta, values["optimizer"], float(values["learning_rate"]))


def build_model(hp: Any, meta: dict, space: dict | None = None) -> Any:
    """Builds a model for the bundle's modality from KerasTuner hyperparameters `hp`.

    Args:
        hp: KerasTuner HyperParameters; their values win over the space's defaults.
        meta: the bundle metadata.
        space: a parsed search space (kerasflow.modeling.search_space); the modality's
            default (a transfer head's with a base in `meta`) when None.
    """
    from kerasflow.modeling import search_space

    if space is None:
        space = search_space.resolve_space(meta[C.META_MODALITY], transfer=C.META_TRANSFER in meta)
    return build_from_values(search_space.declare(hp, space), meta)


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


class _Column:
    """One model input (or the targets) as a tensor; a text column as int32 codes into a
    tensor of its distinct values, so a row costs 4 bytes instead of a 24-byte tf string."""

    def __init__(self, value: Any) -> None:
        import numpy as np
        import tensorflow as tf

        self.vocabulary = None
        if isinstance(value, np.ndarray) and value.dtype == object:
            import pandas as pd

            codes, uniques = pd.factorize(value.ravel(), use_na_sentinel=False)
            self.values = tf.constant(codes.astype("int32").reshape(value.shape))
            self.vocabulary = tf.constant(np.asarray(uniques, dtype=object))
        else:
            self.values = tf.convert_to_tensor(value)

    def take(self, idx: Any) -> Any:
        import tensorflow as tf

        rows = tf.gather(self.values, idx)
        return rows if self.vocabulary is None else tf.gather(self.vocabulary, rows)


class Rows:
    """Model inputs and targets held once as tensors, for pipelines of any batch size."""

    def __init__(self, inputs: Any, y: Any) -> None:
        import tensorflow as tf

        self.count = len(y)
        self._columns = tf.nest.map_structure(_Column, (inputs, y))

    @classmethod
    def joined(cls, *parts: tuple[Any, Any]) -> Rows:
        """The rows of several (inputs, y) parts one after another, joined a column at a time
        (a joined copy of every column at once would take the inputs' size again)."""
        import numpy as np
        import tensorflow as tf

        rows = cls.__new__(cls)
        rows.count = sum(len(y) for _, y in parts)
        rows._columns = tf.nest.map_structure(
            lambda *values: _Column(np.concatenate(values)), *parts
        )
        return rows

    def take(self, idx: Any) -> Any:
        """The (inputs, targets) of the rows at positions `idx`."""
        import tensorflow as tf

        return tf.nest.map_structure(lambda column: column.take(idx), self._columns)


def make_dataset(inputs: Any, y: Any, batch_size: int, shuffle: bool = False, seed: int = 0) -> Any:
    """A batched tf.data pipeline over in-memory inputs, gathered one batch at a time.

    `inputs` and `y` are arrays (or a dict of arrays), or `inputs` is a `Rows` made from them
    once and `y` is None. The rows are held as tensors (Keras 3 `fit` refuses NumPy string
    arrays, so string features must travel as tf tensors) and every batch is a `tf.gather` of
    its row indices. Shuffling permutes the row indices, a new permutation each epoch derived
    from `seed`, so no per-row element is ever materialized: a shuffle buffer or cache of row
    elements costs about 4 KB per table row and several times the time per epoch.
    """
    import tensorflow as tf

    rows = inputs if isinstance(inputs, Rows) else Rows(inputs, y)
    n = rows.count
    batch_size = max(1, int(batch_size))
    starts = tf.data.Dataset.range(0, n, batch_size)
    if shuffle:

        def permuted_batches(epoch_seed: Any) -> Any:
            order = tf.random.experimental.stateless_shuffle(
                tf.range(n, dtype=tf.int64),
                seed=tf.stack([epoch_seed, tf.constant(seed, tf.int64)]),
            )
            return starts.map(lambda start: order[start : start + batch_size])

        epoch_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        indices = epoch_seeds.flat_map(permuted_batches)
    else:
        indices = starts.map(lambda start: tf.range(start, tf.minimum(start + batch_size, n)))
    ds = indices.map(rows.take)
    ds = ds.apply(tf.data.experimental.assert_cardinality(-(-n // batch_size)))
    return ds.prefetch(tf.data.AUTOTUNE)
