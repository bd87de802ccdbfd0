"""The train step's extra exports of the final model (`export`): TFLite variants, TF.js.

Each one is converted from the SavedModel the step exported, checked against it on the test
split (kerasflow.modeling.tflite, kerasflow.modeling.tfjs), written into the model artifact
under `tflite/` or `tfjs/` with a report, and logged as MLflow artifacts with its size,
agreement and score as metrics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.runtime import boundary
from kerasflow.runtime.fileio import write_json_atomic
from kerasflow.settings.steps import parse_exports
from kerasflow.tracking import runs

STEP = "train"


def _test_split(splits_dir: str, meta: dict) -> dict[str, Any]:
    """The test split as an export's check takes it: the model's inputs and the targets."""
    from kerasflow.data import artifacts

    test = artifacts.load_part(splits_dir, "test")
    return {
        "task": meta[C.META_TASK],
        "test_x": artifacts.model_inputs(meta, test),
        "test_y": artifacts.targets(meta, test),
    }


def _check_metrics(prefix: str, row: dict) -> tuple[str, dict[str, float]]:
    """The score's name and the MLflow metrics of one checked export (`row` of its report)."""
    score = "accuracy" if "accuracy" in row else "mae"
    return score, {
        f"{prefix}_size_bytes": row["size_bytes"],
        f"{prefix}_agreement": row["agreement"],
        f"{prefix}_test_{score}": row[score],
    }


def export_tflite(model_dir: Path, splits_dir: str, feed: Any, seed: int) -> dict[str, dict]:
    """Converts the exported SavedModel to every TFLite variant and checks each on test."""
    import mlflow

    from kerasflow.modeling import tflite

    out = model_dir / C.TFLITE_DIR
    report = tflite.export_variants(
        model_dir / C.SAVED_MODEL_DIR,
        out,
        sample_x=feed.samples()[0],
        seed=seed,
        **_test_split(splits_dir, feed.meta),
    )
    write_json_atomic(out / C.TFLITE_REPORT_FILE, report)
    runs.log_dir_artifacts(out, C.TFLITE_DIR)
    metrics = {}
    for variant in tflite.VARIANTS:
        row = report[variant]
        score, more = _check_metrics(f"tflite_{variant}", row)
        metrics |= more
        boundary.progress(
            STEP,
            f"tflite {variant}: {row['size_bytes']} bytes, agrees with the SavedModel on "
            f"{row['agreement']:.2%} of test rows, test {score} {row[score]:.4f}",
        )
    mlflow.log_metrics(metrics)
    return report


def export_tfjs(model_dir: Path, splits_dir: str, feed: Any) -> dict[str, dict]:
    """Converts the exported SavedModel to a TF.js graph model and checks it on test in Node."""
    import mlflow

    from kerasflow.modeling import tfjs

    out = model_dir / C.TFJS_DIR
    report = tfjs.export_graph_model(
        model_dir / C.SAVED_MODEL_DIR, out, **_test_split(splits_dir, feed.meta)
    )
    write_json_atomic(out / C.TFJS_REPORT_FILE, report)
    runs.log_dir_artifacts(out, C.TFJS_DIR)
    row = report["graph_model"]
    score, metrics = _check_metrics("tfjs", row)
    mlflow.log_metrics(metrics)
    boundary.progress(
        STEP,
        f"tfjs graph model: {row['size_bytes']} bytes in {len(row['weight_shards'])} shard(s), "
        f"agrees with the SavedModel on {row['agreement']:.2%} of test rows, "
        f"test {score} {row[score]:.4f}",
    )
    return report


def check_exports(formats: str, meta: dict) -> None:
    """Refuses, before the final fit, an export that cannot be made of this model."""
    if "tfjs" in parse_exports(formats):
        from kerasflow.modeling import tfjs

        tfjs.refuse_text_models(meta[C.META_MODALITY])


def run_exports(formats: str, model_dir: Path, splits_dir: str, feed: Any, seed: int) -> None:
    """Makes every export `formats` (the `export` setting) names."""
    for name in parse_exports(formats):
        if name == "tflite":
            export_tflite(model_dir, splits_dir, feed, seed)
        elif name == "tfjs":
            export_tfjs(model_dir, splits_dir, feed)
