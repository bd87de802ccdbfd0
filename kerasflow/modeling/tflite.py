"""TFLite conversions of an exported model, each checked against the SavedModel.

Four variants are made from the SavedModel's `serving_default` signature:

- `float32`: no optimization;
- `dynamic_range`: weights stored as int8, activations computed in float;
- `float16`: weights stored as float16;
- `int8`: weights and activations in int8, calibrated on a representative sample of the train
  split (inputs and outputs stay float32, so a client feeds the same rows).

A model whose operations TFLite's builtins lack (string lookups of a text or categorical
model) is converted with TensorFlow ops as a fallback (`uses_tf_ops` in the report); an int8
model whose operations have no int8 kernel keeps float kernels for them (`int8_fallback`).

Each variant answers the test split beside the SavedModel: `agreement` is the share of rows
on which it agrees (the same predicted class; for regression a value within 1% of the
SavedModel's spread of answers), `accuracy` (classification) or `mae` (regression) its own
score, `max_abs_diff` the largest difference of any output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C

VARIANTS = ("float32", "dynamic_range", "float16", "int8")
REPRESENTATIVE_ROWS = 200
REGRESSION_TOLERANCE = 0.01
"""A regression answer agrees when within this share of the reference answers' spread."""


def representative_rows(
    x: dict[str, np.ndarray], rows: int = REPRESENTATIVE_ROWS, seed: int = 0
) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """A representative dataset for int8 calibration: up to `rows` seeded rows, one at a time."""
    n = len(next(iter(x.values())))
    pick = np.random.default_rng(seed).permutation(n)[: min(rows, n)]

    def gen() -> Iterator[dict[str, np.ndarray]]:
        for i in pick:
            yield {k: np.asarray(v[i : i + 1], dtype=np.float32) for k, v in x.items()}

    return gen


def convert(saved_model_dir: str | Path, variant: str, sample: Any = None) -> tuple[bytes, dict]:
    """The `.tflite` bytes of one variant and notes on how it was made.

    Raises:
        ValueError: for an unknown variant, or `int8` without a representative `sample`.
    """
    import tensorflow as tf

    if variant not in VARIANTS:
        raise ValueError(f"unknown TFLite variant '{variant}' (choose from {', '.join(VARIANTS)})")
    if variant == "int8" and sample is None:
        raise ValueError("int8 conversion needs a representative sample")

    def converter(ops: list) -> Any:
        conv = tf.lite.TFLiteConverter.from_saved_model(
            str(saved_model_dir), signature_keys=[C.SERVING_SIGNATURE]
        )
        if variant != "float32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if variant == "float16":
            conv.target_spec.supported_types = [tf.float16]
        if variant == "int8":
            conv.representative_dataset = sample
        conv.target_spec.supported_ops = ops
        return conv

    builtins = tf.lite.OpsSet.TFLITE_BUILTINS
    first = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] if variant == "int8" else [builtins]
    attempts = [(first, {})]
    if variant == "int8":
        attempts.append(([builtins], {"int8_fallback": True}))
    attempts.append(([builtins, tf.lite.OpsSet.SELECT_TF_OPS], {"uses_tf_ops": True}))
    error: Exception | None = None
    for ops, notes in attempts:
        try:
            return converter(ops).convert(), notes
        except Exception as exc:  # the converter raises ConverterError and plain errors alike
            error = exc
    assert error is not None
    raise error


def run_tflite(model: bytes, x: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    """The `serving_default` answers (`output_0`) of a `.tflite` model for every row of x."""
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():  # tf.lite.Interpreter's notice of its move to LiteRT
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_content=model)
    runner = interpreter.get_signature_runner(C.SERVING_SIGNATURE)
    wanted = runner.get_input_details()
    n = len(next(iter(x.values())))
    parts = []
    for start in range(0, n, batch):
        feed = {
            k: np.asarray(v[start : start + batch]).astype(wanted[k]["dtype"])
            for k, v in x.items()
            if k in wanted
        }
        parts.append(np.asarray(runner(**feed)[C.SERVING_OUTPUT]))
    return np.concatenate(parts)


def run_saved_model(saved_model_dir: str | Path, x: dict[str, np.ndarray]) -> np.ndarray:
    """The SavedModel's `serving_default` answers for every row of x."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved_model_dir)).signatures[C.SERVING_SIGNATURE]
    return fn(**{k: tf.constant(v) for k, v in x.items()})[C.SERVING_OUTPUT].numpy()


def compare(reference: np.ndarray, answers: np.ndarray, y: np.ndarray, task: str) -> dict:
    """How far a variant's answers are from the reference's, and its own score on labels y."""
    reference = np.asarray(reference, dtype=np.float64)
    answers = np.asarray(answers, dtype=np.float64).reshape(reference.shape)
    out = {"max_abs_diff": float(np.abs(reference - answers).max()) if reference.size else 0.0}
    if task == "classification":
        same = reference.argmax(axis=1) == answers.argmax(axis=1)
        out["accuracy"] = float((answers.argmax(axis=1) == np.asarray(y).astype(int)).mean())
    else:
        spread = float(np.ptp(reference)) or 1.0
        same = np.abs(reference - answers).reshape(len(reference), -1).max(axis=1) <= (
            REGRESSION_TOLERANCE * spread
        )
        out["mae"] = float(np.abs(answers.reshape(-1) - np.asarray(y).reshape(-1)).mean())
    out["agreement"] = float(same.mean()) if len(same) else 1.0
    return out


def export_variants(
    saved_model_dir: str | Path,
    out_dir: str | Path,
    *,
    task: str,
    test_x: dict[str, np.ndarray],
    test_y: np.ndarray,
    sample_x: dict[str, np.ndarray],
    variants: tuple[str, ...] = VARIANTS,
    seed: int = 0,
) -> dict[str, dict]:
    """Writes `model_<variant>.tflite` for each variant into `out_dir` and checks each one.

    Returns:
        Per variant: its file name, size in bytes, notes on the conversion and its comparison
        with the SavedModel on the test rows (`agreement`, `accuracy` or `mae`, `max_abs_diff`).
    """
    from kerasflow.runtime.fileio import write_bytes_atomic

    reference = run_saved_model(saved_model_dir, test_x)
    sample = representative_rows(sample_x, seed=seed)
    report: dict[str, dict] = {}
    for variant in variants:
        data, notes = convert(saved_model_dir, variant, sample if variant == "int8" else None)
        name = f"model_{variant}.tflite"
        write_bytes_atomic(Path(out_dir, name), data)
        answers = run_tflite(data, test_x)
        report[variant] = {
            "file": name,
            "size_bytes": len(data),
            **notes,
            **compare(reference, answers, test_y, task),
        }
    report["saved_model"] = compare(reference, reference, test_y, task)
    return report
