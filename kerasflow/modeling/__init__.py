"""Keras models: preprocessing inputs and model bodies, custom layers, the search space, the
KerasTuner hypermodel and the SavedModel export.

`build_inputs(meta)` is the entry point for a user's own `build_model(hp, meta)`.
"""

from kerasflow.modeling.builders import build_inputs

__all__ = ["build_inputs"]
