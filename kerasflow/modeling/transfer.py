"""Transfer learning for images: a pretrained keras.applications base under a tuned head.

The model takes the same raw images as a model built from scratch (`image` input, the data's
own size, channels and pixel range): inside it, a resizing layer brings them to the base's
size and one frozen per-pixel affine layer maps the raw pixel range onto 0..255, turns gray
into RGB and applies the base's own preprocessing (ImageNet's `tf`, `torch` or `caffe`
conventions; bases with their own preprocessing layers take 0..255). The base is frozen while
the search tunes the head; the final training then fine-tunes the base's top layers at a lower
learning rate (`unfreeze_top`).

Base weights are `imagenet` (read from the Keras cache only: nothing can be downloaded, so a
missing file is an error before any step runs) or a local or object-store path: a weights file
of the named application (`.h5`, `.weights.h5`) or a saved Keras model of the base (`.keras`),
whose own architecture (an `alpha`, an input size) is kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.runtime.errors import UserError

IMAGENET = "imagenet"
MIN_SIZE = 32
"""The smallest height and width keras.applications bases take."""
FINE_TUNE_LR_FACTOR = 0.1
"""The fine-tuning phase starts at this fraction of the head's tuned learning rate."""

# Per-channel affine maps from RGB in 0..255 to what each convention's weights expect:
# (scale per output channel, offset per output channel, source channel per output channel).
_TORCH_MEAN, _TORCH_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CONVENTIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...], tuple[int, ...]]] = {
    "tf": ((1 / 127.5,) * 3, (-1.0,) * 3, (0, 1, 2)),
    "torch": (
        tuple(1 / (255 * s) for s in _TORCH_STD),
        tuple(-m / s for m, s in zip(_TORCH_MEAN, _TORCH_STD, strict=True)),
        (0, 1, 2),
    ),
    # BGR with ImageNet's channel means subtracted.
    "caffe": ((1.0,) * 3, (-103.939, -116.779, -123.68), (2, 1, 0)),
    # The base holds its own rescaling layers and takes 0..255.
    "raw": ((1.0,) * 3, (0.0,) * 3, (0, 1, 2)),
}


@dataclasses.dataclass(frozen=True)
class Base:
    """One keras.applications base: its class, input convention and ImageNet weight file."""

    application: str
    convention: str
    weights_file: str  # a glob of the no-top ImageNet weights file in the Keras cache


BASES: dict[str, Base] = {
    "mobilenet_v2": Base(
        "MobileNetV2", "tf", "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_*_no_top.h5"
    ),
    "mobilenet_v3_small": Base(
        "MobileNetV3Small", "raw", "weights_mobilenet_v3_small_*_no_top*.h5"
    ),
    "mobilenet_v3_large": Base(
        "MobileNetV3Large", "raw", "weights_mobilenet_v3_large_*_no_top*.h5"
    ),
    "efficientnet_b0": Base("EfficientNetB0", "raw", "efficientnetb0_notop.h5"),
    "efficientnet_b1": Base("EfficientNetB1", "raw", "efficientnetb1_notop.h5"),
    "efficientnet_v2_b0": Base("EfficientNetV2B0", "raw", "efficientnetv2-b0_notop.h5"),
    "resnet50": Base("ResNet50", "caffe", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "resnet50_v2": Base(
        "ResNet50V2", "tf", "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
    "densenet121": Base(
        "DenseNet121", "torch", "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"
    ),
}
"""The bases `base_model` names (keras.applications classes)."""

BASE_NAMES = tuple(BASES)


# --- where the weights are -----------------------------------------------------------------


def keras_cache_dirs() -> list[Path]:
    """The folders Keras keeps downloaded weights in (`$KERAS_HOME/models`, else
    `~/.keras/models`, and `/tmp/.keras/models`, Keras' fallback for an unwritable home)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home, "models"), Path("/tmp/.keras/models")]


def missing_imagenet_message(base_model: str) -> str:
    """The one line that says a base's ImageNet weights are not in the Keras cache."""
    base = BASES[base_model]
    where = keras_cache_dirs()[0]
    return (
        f"base_weights 'imagenet': the ImageNet weights of {base_model} "
        f"({base.weights_file}) are not in the Keras cache {where} and cannot be downloaded "
        f"here; copy the file there or give base_weights a local weights file or saved base "
        "model"
    )


def cached_imagenet_file(base_model: str) -> Path | None:
    """The cached ImageNet (no-top) weights file of a base, or None when there is none."""
    pattern = BASES[base_model].weights_file
    for folder in keras_cache_dirs():
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if fnmatch.fnmatch(path.name, pattern):
                    return path
    return None


def check_base_weights(base_model: str, base_weights: str) -> None:
    """Fails early, in one line, when the base's weights cannot be had (nothing is downloaded).

    Raises:
        UserError: for an unknown base, ImageNet weights missing from the Keras cache, or a
            weights path that does not exist.
    """
    if not base_model:
        return
    if base_model not in BASES:
        raise UserError(f"unknown base_model '{base_model}' (choose from {', '.join(BASES)})")
    if base_weights == IMAGENET:
        if cached_imagenet_file(base_model) is None:
            raise UserError(missing_imagenet_message(base_model))
        return
    if not base_weights:
        raise UserError(
            "base_model needs base_weights: 'imagenet' or a weights file or saved base model"
        )
    from kerasflow.runtime import fileio

    if not fileio.exists(base_weights):
        raise UserError(f"base_weights: file not found: {base_weights}")


@contextlib.contextmanager
def offline_downloads(base_model: str) -> Iterator[None]:
    """Makes Keras' `get_file` fail with one line instead of downloading a missing file.

    keras.applications call `file_utils.get_file`, which returns a cached file as it is and
    downloads only what is missing.
    """
    from keras.src.utils import file_utils

    original = file_utils.get_file

    def cached_only(fname: str | None = None, origin: str | None = None, **kwargs: Any) -> str:
        name = fname or os.path.basename(str(origin))
        subdir = kwargs.get("cache_subdir", "datasets")
        for folder in keras_cache_dirs():
            if Path(folder.parent, subdir, name).is_file():
                return original(fname, origin, **kwargs)
        raise UserError(missing_imagenet_message(base_model))

    file_utils.get_file = cached_only
    try:
        yield
    finally:
        file_utils.get_file = original


# --- the model -----------------------------------------------------------------------------


def transfer_config(base_model: str, base_weights: str, image_size: int, train_x: Any) -> dict:
    """What the builders need to know of a transfer (kept in the bundle metadata).

    Args:
        base_model: A name of `BASES`.
        base_weights: `imagenet` or a path.
        image_size: The side the base sees (0: the data's larger side, at least 32).
        train_x: The train images (N, H, W, C); their pixel range becomes the base's 0..255.
    """
    import numpy as np

    x = np.asarray(train_x)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(
            f"base_model {base_model} takes gray or RGB images; these have shape "
            f"{tuple(x.shape[1:])}"
        )
    low, high = float(x.min()), float(x.max())
    return {
        "base_model": base_model,
        "base_weights": base_weights,
        "image_size": int(image_size),
        "pixel_range": [low, high if high > low else low + 1.0],
    }


def with_transfer(meta: dict, config: dict | None) -> dict:
    """The metadata with a transfer config attached (unchanged when there is none)."""
    if not config:
        return meta
    if meta[C.META_MODALITY] != "image":
        raise UserError(
            f"base_model {config['base_model']} is for images; these data are "
            f"{meta[C.META_MODALITY]}"
        )
    return {**meta, C.META_TRANSFER: config}


def base_size(config: dict, image_shape: tuple[int, ...]) -> int:
    """The side the base sees: the setting, else the larger image side, at least 32."""
    return max(MIN_SIZE, int(config.get("image_size") or 0) or max(image_shape[:2]))


def input_adapter(channels: int, pixel_range: tuple[float, float], convention: str) -> Any:
    """One frozen per-pixel Dense layer: raw pixels in `pixel_range` -> the base's input.

    Its kernel maps the data's channels (1: gray, copied to R, G and B) onto the three the
    base takes, scaled so that `pixel_range` spans 0..255, then the convention's per-channel
    scale, offset and channel order.
    """
    import keras
    import numpy as np

    low, high = pixel_range
    k = 255.0 / (high - low)
    scales, offsets, sources = CONVENTIONS[convention]
    kernel = np.zeros((channels, 3), dtype="float32")
    bias = np.zeros(3, dtype="float32")
    for out in range(3):
        src = 0 if channels == 1 else sources[out]
        kernel[src, out] = scales[out] * k
        bias[out] = offsets[out] - scales[out] * k * low
    return keras.layers.Dense(
        3,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias),
        trainable=False,
        name="to_base_input",
    )


def load_base(config: dict, size: int) -> Any:
    """The pretrained base (no top) for images of `size` x `size` x 3.

    A saved Keras model is loaded as it was saved; ImageNet weights come from the Keras cache;
    a weights file is loaded into the named application built at `size`.
    """
    import keras

    name, weights = config["base_model"], config["base_weights"]
    application = getattr(keras.applications, BASES[name].application)
    if weights == IMAGENET:
        with offline_downloads(name):
            return application(include_top=False, weights=IMAGENET, input_shape=(size, size, 3))
    from kerasflow.runtime import fileio

    with fileio.local_copy(weights) as local:
        if local.suffix == ".keras":
            from kerasflow.modeling.builders import load_model

            base = load_model(local, compile=False)
            shape = tuple(base.inputs[0].shape[1:])
            if len(shape) != 3 or shape[-1] != 3:
                raise UserError(
                    f"base_weights {weights}: the saved base takes {shape}, not RGB images"
                )
            return base
        base = application(include_top=False, weights=None, input_shape=(size, size, 3))
        try:
            base.load_weights(str(local))
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise UserError(
                f"base_weights {weights} do not fit {name} at {size}x{size}: {first}"
            ) from None
        return base


def pool_features(x: Any, pooling: str) -> Any:
    """The base's output as one vector per image: a feature map averaged (`avg`) or maxed
    (`max`) over its positions, or kept whole (`flatten`, which keeps where in the image each
    feature was); a base that already pools passes through."""
    from keras import layers

    if len(x.shape) <= 2:
        return x
    if pooling == "flatten":
        return layers.Flatten(name="pool")(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name="pool")(x)
    return layers.GlobalAveragePooling2D(name="pool")(x)


def build_transfer_model(values: dict, meta: dict) -> Any:
    """The transfer model the head's hyperparameter `values` describe, compiled, base frozen."""
    import keras
    from keras import layers

    from kerasflow.modeling import builders

    config = meta[C.META_TRANSFER]
    shape = tuple(meta[C.META_IMAGE_SHAPE])
    base = load_base(config, base_size(config, shape))
    base.trainable = False
    height, width = (int(d) for d in base.inputs[0].shape[1:3])
    inp = keras.Input(shape=shape, name=C.IMAGE_INPUT)
    x = inp
    if (height, width) != shape[:2]:
        x = layers.Resizing(height, width, name="resize_for_base")(x)
    convention = BASES[config["base_model"]].convention
    x = input_adapter(shape[-1], tuple(config["pixel_range"]), convention)(x)
    # training=False keeps the base's batch normalization in inference mode, also once the
    # top layers are unfrozen for fine-tuning.
    x = pool_features(base(x, training=False), values.get("pooling", "avg"))
    x = layers.Dropout(float(values["dropout"]))(x)
    for _ in range(int(values["num_layers"])):
        dense = layers.Dense(int(values["units"]), **builders.dense_weights(values))
        x = builders.hidden_layer(x, dense, values)
        x = layers.Dropout(float(values["dropout"]))(x)
    model = keras.Model(inp, builders.build_head(meta, x))
    return builders.compile_model(model, meta, values["optimizer"], float(values["learning_rate"]))


def find_base(model: Any) -> Any:
    """The pretrained base inside a transfer model (its one nested model)."""
    import keras

    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"expected one base model inside {model.name}, found {len(nested)}")
    return nested[0]


def unfreeze_top(
    model: Any,
    meta: dict,
    layers: int,
    lr_factor: float = FINE_TUNE_LR_FACTOR,
    learning_rate: float | None = None,
) -> int:
    """Unfreezes the base's top `layers` weighted layers and recompiles at a lower rate.

    Batch normalization layers stay frozen (their statistics came with the weights). The
    optimizer is a fresh one of the same kind at `lr_factor` x `learning_rate`, the head's
    tuned rate: the head's fit may have lowered its optimizer's rate since (on a plateau, or
    a schedule's decay to about zero), which would leave fine-tuning next to no steps. Without
    `learning_rate`, the optimizer's current rate is taken.

    Returns:
        How many layers were unfrozen.
    """
    import keras

    base = find_base(model)
    base.trainable = True
    weighted = [
        layer
        for layer in base.layers
        if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)
    ]
    chosen = set(map(id, weighted[-layers:])) if layers > 0 else set()
    for layer in base.layers:
        layer.trainable = id(layer) in chosen
    opt = model.optimizer
    start = learning_rate if learning_rate else keras.ops.convert_to_numpy(opt.learning_rate)
    lr = float(start) * lr_factor
    config = {k: v for k, v in opt.get_config().items() if k != "learning_rate"}
    model.compile(
        optimizer=type(opt)(learning_rate=lr, **config),
        loss=model.loss,
        metrics=["accuracy"] if meta[C.META_TASK] == "classification" else ["mae"],
    )
    return len(chosen)


def attach(meta: dict, train_x: dict, settings: Any) -> tuple[dict, dict]:
    """The metadata with the transfer of `settings` (a step's) attached, and its config.

    Checks the weights and that the data are gray or RGB images first; without a
    `base_model` the metadata come back unchanged with an empty config.

    Raises:
        UserError: for missing weights, data that are not images or images of other channels.
    """
    if not settings.base_model:
        return meta, {}
    check_base_weights(settings.base_model, settings.base_weights)
    with_transfer(meta, {"base_model": settings.base_model})  # fails for data other than images
    config = transfer_config(
        settings.base_model,
        settings.base_weights,
        settings.base_image_size,
        train_x[C.IMAGE_INPUT],
    )
    return with_transfer(meta, config), config
