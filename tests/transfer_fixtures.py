"""Data for transfer learning tests: a small base pretrained on digits 0-4, digits 5-9 to learn.

The base is keras.applications' MobileNetV2 at alpha 0.35 on 32x32 RGB, trained behind the same
input conversion kerasflow puts in front of a base (resize, then gray 0..16 -> the `tf`
convention's -1..1 RGB), and saved as a Keras model. The target set is digits 5-9 with 50 rows
per class as an `.npz` of raw 8x8x1 images, which kerasflow reads like any image data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BASE_FILE = "base.keras"
TARGET_FILE = "digits_5_9.npz"


def make_digits_transfer(folder: Path, *, epochs: int = 4, rows_per_class: int = 50) -> Path:
    """Writes `base.keras` (pretrained on digits 0-4) and `digits_5_9.npz` into `folder`."""
    import keras
    from sklearn.datasets import load_digits

    from kerasflow.modeling import transfer

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits()
    x, y = digits.images[..., None].astype("float32"), digits.target
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9  # a few hundred steps: the moving statistics must settle
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Resizing(32, 32)(inp)
    h = transfer.input_adapter(1, (0.0, 16.0), "tf")(h)
    model = keras.Model(inp, keras.layers.Dense(5, activation="softmax")(base(h)))
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    source = y < 5
    model.fit(x[source], y[source], epochs=epochs, batch_size=32, verbose=0)
    base.save(folder / BASE_FILE)
    rng = np.random.default_rng(0)
    rows = [rng.choice(np.where(y == c)[0], rows_per_class, replace=False) for c in range(5, 10)]
    idx = np.concatenate(rows)
    np.savez(folder / TARGET_FILE, x=x[idx], y=y[idx])
    return folder
