"""A SavedModel export that can answer with class names.

`model.export` writes one `serving_default` signature (probabilities as `output_0`). For
classification this export adds a `classify` signature on the same raw inputs that returns the
probabilities (`scores`), the predicted class names (`classes`) and the names of every column
of the scores (`class_names`), so a TF Serving client gets 'malignant' rather than 1. The
`serving_default` signature stays exactly as `model.export` writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasflow import constants as C


def input_signature(meta: dict) -> dict[str, Any]:
    """TensorSpecs of the raw inputs a model built by `modeling.build_inputs(meta)` takes."""
    import tensorflow as tf

    if meta[C.META_MODALITY] == "image":
        shape = (None, *meta[C.META_IMAGE_SHAPE])
        return {C.IMAGE_INPUT: tf.TensorSpec(shape, tf.float32, name=C.IMAGE_INPUT)}
    specs = {}
    for feat in meta[C.META_FEATURES]:
        dtype = tf.float32 if feat["kind"] == "numeric" else tf.string
        specs[feat["input"]] = tf.TensorSpec((None, 1), dtype, name=feat["input"])
    return specs


def export_saved_model(model: Any, export_dir: str | Path, meta: dict) -> None:
    """Exports `model` for serving; classification models also get the `classify` signature."""
    names = list(meta.get(C.META_CLASS_NAMES) or [])
    if meta[C.META_TASK] != "classification" or not names:
        model.export(str(export_dir), verbose=False)
        return
    import keras
    import tensorflow as tf

    spec = input_signature(meta)
    table = tf.constant(names)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(inputs):
        return {C.SERVING_OUTPUT: model(inputs, training=False)}

    def classify(inputs):
        scores = model(inputs, training=False)
        rows = tf.shape(scores)[0]
        return {
            "scores": scores,
            "classes": tf.gather(table, tf.argmax(scores, axis=1)),
            "class_names": tf.tile(table[tf.newaxis, :], tf.stack([rows, 1])),
        }

    archive.add_endpoint(C.SERVING_SIGNATURE, serve, input_signature=[spec])
    archive.add_endpoint(C.CLASSIFY_SIGNATURE, classify, input_signature=[spec])
    archive.write_out(str(export_dir), verbose=False)
