"""Custom Keras layers that the exported models carry (registered for `.keras` loading)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="kerasflow")
class FillMissing(keras.layers.Layer):
    """Replaces NaN in numeric inputs with per-column values fitted on the train split.

    Cleaning imputes missing numbers before training; this layer does the same for rows that
    reach the served model with gaps, so training and serving see the same kind of values.
    """

    def __init__(self, values: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.values = [float(v) for v in values]

    def call(self, inputs: Any) -> Any:
        fill = ops.convert_to_tensor(self.values, dtype=inputs.dtype)
        return ops.where(ops.isnan(inputs), ops.broadcast_to(fill, ops.shape(inputs)), inputs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "values": self.values}
