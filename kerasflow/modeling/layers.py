"""Custom Keras layers and functions exported models carry (registered for `.keras` loading)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
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


@keras.saving.register_keras_serializable(package="kerasflow")
class CleanCategory(keras.layers.Layer):
    """Cleans served category strings the way ingest cleaned the training data.

    Surrounding spaces go; an empty or junk value ('n/a', '?', 'NULL'...) becomes the category
    training imputed for missing values, fitted on the train split.
    """

    def __init__(self, fill: str, junk: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fill = str(fill)
        self.junk = sorted(str(j) for j in junk)

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        text = tf.strings.strip(inputs)
        lowered = tf.strings.lower(text, encoding="utf-8")
        junk = tf.constant(self.junk, dtype=tf.string)
        is_junk = tf.reduce_any(tf.equal(tf.expand_dims(lowered, -1), junk), axis=-1)
        return tf.where(is_junk, tf.fill(tf.shape(text), self.fill), text)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill": self.fill, "junk": self.junk}


@keras.saving.register_keras_serializable(package="kerasflow")
def standardize_text(inputs: Any) -> Any:
    """The `standardize` of the model's TextVectorization layer: `textprep.standardize` in TF.

    Keras' default lowercases ASCII only, while the vocabulary was counted on words that Python
    lowercased over all of Unicode; this lowercases UTF-8 text the same way, then removes the
    same punctuation and turns the same Unicode spaces into plain ones, from one pattern each.
    """
    import tensorflow as tf

    from kerasflow.data import textprep

    text = tf.strings.lower(inputs, encoding="utf-8")
    text = tf.strings.regex_replace(text, textprep.PUNCTUATION_PATTERN, "")
    return tf.strings.regex_replace(text, textprep.UNICODE_SPACE_PATTERN, " ")


@keras.saving.register_keras_serializable(package="kerasflow")
class MemberCombiner(keras.layers.Layer):
    """Combines the outputs of an ensemble's members into one (kerasflow.modeling.ensemble).

    `average`: the fixed weighted mean of the members' outputs. `stacking`: for
    classification, a softmax over a learned linear map of each member's log-probabilities
    (started at their geometric mean); for regression, a learned linear map of the members'
    values (started at their mean).
    """

    EPSILON = 1e-7

    def __init__(
        self, count: int, method: str, task: str, weights: list[float], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.count = int(count)
        self.method = str(method)
        self.task = str(task)
        self.weights_ = [float(w) for w in weights]

    def build(self, input_shape: Any) -> None:
        if self.method != "stacking":
            return
        width = int(input_shape[0][-1])
        if self.task == "classification":
            eye = np.tile(np.eye(width, dtype="float32")[None], (self.count, 1, 1)) / self.count
            self.kernel = self.add_weight(
                shape=(self.count, width, width),
                initializer=keras.initializers.Constant(eye),
                name="kernel",
            )
        else:
            self.kernel = self.add_weight(
                shape=(self.count,),
                initializer=keras.initializers.Constant(1.0 / self.count),
                name="kernel",
            )
        self.bias = self.add_weight(shape=(width,), initializer="zeros", name="bias")

    def call(self, inputs: Any) -> Any:
        stacked = ops.stack(list(inputs), axis=0)  # (members, rows, width)
        if self.method != "stacking":
            w = ops.convert_to_tensor(self.weights_, dtype=stacked.dtype)
            return ops.sum(stacked * ops.reshape(w, (-1, 1, 1)), axis=0)
        if self.task == "classification":
            logs = ops.log(ops.clip(stacked, self.EPSILON, 1.0))
            logits = ops.einsum("krc,kcd->rd", logs, self.kernel) + self.bias
            return ops.softmax(logits, axis=-1)
        return ops.sum(stacked * ops.reshape(self.kernel, (-1, 1, 1)), axis=0) + self.bias

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "count": self.count,
            "method": self.method,
            "task": self.task,
            "weights": self.weights_,
        }
