"""Data for transfer learning tests: a small base pretrained on digits 0-4, digits 5-9 to learn.

The base is keras.applications' MobileNetV2 (alpha 0.35, 32x32 RGB) cut after `CUT`: the full
network shrinks 32x32 to a 1x1 map whose features, trained on five classes, keep little of
what tells other digits apart. It is trained behind the same input conversion kerasflow puts in
front of a base (resize, then gray 0..16 -> the `tf` convention's -1..1 RGB), with small random
shifts, and saved as a Keras model; the same network before training is saved too, as the
control of the same architecture without pretraining. The target set is digits 5-9 with 50
rows per class as an `.npz` of raw 8x8x1 images, which kerasflow reads like any image data;
the other digits 5-9 are kept apart as a held-out test set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

BASE_FILE = "base.keras"
RANDOM_BASE_FILE = "random_base.keras"
TARGET_FILE = "digits_5_9.npz"
HELDOUT_FILE = "digits_5_9_heldout.npz"
SIZE = 32
CUT = "block_6_expand_relu"
"""The layer the base ends at (a 4x4 map of 96 channels at 32x32; 17,584 weights)."""


@dataclasses.dataclass(frozen=True)
class Pretrained:
    folder: Path
    val_accuracy: float
    """The base's accuracy on held-out digits 0-4 after pretraining."""


def mobilenet_cut(seed: int | None = None) -> object:
    """MobileNetV2 (alpha 0.35, 32x32, random weights) up to `CUT`: its 4x4 feature map, which
    the head over it pools as its `pooling` hyperparameter says."""
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    full = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, include_top=False, weights=None
    )
    return keras.Model(full.inputs, full.get_layer(CUT).output, name="mobilenetv2_cut")


def settle_batch_norm(base: object) -> None:
    """Batch normalization momentum 0.9: with a few steps an epoch, Keras' 0.99 leaves the
    moving statistics near their initial values for tens of epochs, and the model in inference
    mode near chance."""
    import keras

    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9


def make_digits_transfer(
    folder: Path, *, epochs: int = 20, rows_per_class: int = 50, seed: int = 0
) -> Pretrained:
    """Writes the pretrained and the random base, the target and the held-out set."""
    import keras
    from sklearn.datasets import load_digits

    from kerasflow.modeling import transfer

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x, y = digits.images[..., None].astype("float32"), digits.target
    base = mobilenet_cut(seed)
    base.save(folder / RANDOM_BASE_FILE)
    settle_batch_norm(base)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed)(inp)
    h = keras.layers.Resizing(SIZE, SIZE)(h)
    h = transfer.input_adapter(1, (0.0, 16.0), "tf")(h)
    h = keras.layers.GlobalAveragePooling2D()(base(h))
    model = keras.Model(inp, keras.layers.Dense(5, activation="softmax")(h))
    model.compile(
        keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    rng = np.random.default_rng(seed)
    source = rng.permutation(np.where(y < 5)[0])
    val, train = source[: len(source) // 5], source[len(source) // 5 :]
    history = model.fit(
        x[train],
        y[train],
        validation_data=(x[val], y[val]),
        epochs=epochs,
        batch_size=32,
        verbose=0,
    )
    base.save(folder / BASE_FILE)
    rows = [rng.choice(np.where(y == c)[0], rows_per_class, replace=False) for c in range(5, 10)]
    idx = np.concatenate(rows)
    np.savez(folder / TARGET_FILE, x=x[idx], y=y[idx])
    rest = np.setdiff1d(np.where(y >= 5)[0], idx)
    np.savez(folder / HELDOUT_FILE, x=x[rest], y=y[rest])
    return Pretrained(folder, float(history.history["val_accuracy"][-1]))


def build_same_architecture(hp: object, meta: dict) -> object:
    """A `build_model` of the transfer model's architecture trained end to end from scratch.

    The base's layers start from random weights and all train at the tuned learning rate from
    the first epoch, with the pretraining's batch normalization momentum; the head and its
    space are the transfer head's (dropout, one dense layer).
    """
    import keras

    from kerasflow.modeling import builders, transfer

    inputs, x = builders.build_inputs(meta)
    inp = inputs[next(iter(inputs))]
    x = keras.layers.Resizing(SIZE, SIZE)(x)
    if x.shape[-1] == 1:
        x = keras.layers.Concatenate()([x, x, x])
    base = mobilenet_cut()
    settle_batch_norm(base)
    x = transfer.pool_features(base(x), hp.Choice("pooling", ["avg", "flatten"]))
    dropout = hp.Choice("dropout", [0.2, 0.0, 0.5])
    x = keras.layers.Dropout(dropout)(x)
    x = keras.layers.Dense(hp.Choice("units", [128, 64, 256]), activation="relu")(x)
    x = keras.layers.Dropout(dropout)(x)
    model = keras.Model(inp, builders.build_head(meta, x))
    learning_rate = hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    return builders.compile_model(model, meta, "adam", learning_rate)
