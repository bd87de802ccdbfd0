"""Final training on the best hyperparameters, then export for serving.

EarlyStopping (best weights restored) and ReduceLROnPlateau guard the fit. The model is saved
as a `.keras` file and exported as a SavedModel whose `serving_default` signature takes raw
features (the preprocessing layers are inside the model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow import modeling, stepio, tracking, tuning
from kerasflow.fileio import write_json_atomic
from kerasflow.trainingdata import class_weight_arg, load_training_data

STEP = "train"


def fit_final(
    meta: dict,
    train_ds: Any,
    val_ds: Any,
    hparams: dict,
    epochs: int,
    patience: int,
    seed: int,
    class_weight: dict | None = None,
    extra_callbacks: list | None = None,
) -> tuple[Any, dict]:
    """Builds the model from `hparams` and fits it; returns the model and its history."""
    import keras

    keras.utils.set_random_seed(seed)
    model = modeling.build_model(modeling.fixed_hyperparameters(hparams), meta)
    monitor, mode = modeling.objective(meta)
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=monitor, mode=mode, patience=patience + 2, restore_best_weights=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=max(1, patience // 2 + 1), min_lr=1e-6
        ),
        *(extra_callbacks or []),
    ]
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
        class_weight=class_weight,
    )
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def export_model(model: Any, model_dir: Path) -> None:
    """Writes `model.keras` and the SavedModel export into `model_dir`."""
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / C.KERAS_MODEL_FILE)
    model.export(str(model_dir / C.SAVED_MODEL_DIR), verbose=False)


def plot_history(history: dict):
    """Loss and metric curves, train against validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, name in zip(axes[0], metrics, strict=True):
        ax.plot(history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(history[f"val_{name}"], label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend()
    fig.tight_layout()
    return fig


def history_html(fig: Any) -> str:
    """An HTML page with the history plot embedded (for the KFP UI)."""
    import base64
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    data = base64.b64encode(buf.getvalue()).decode()
    return (
        f'<html><body><h2>Training history</h2><img src="data:image/png;base64,{data}"/>'
        "</body></html>"
    )


@stepio.step_entry(STEP, heavy_imports=("tensorflow", "keras"))
def run(
    splits_dir: str,
    train_dir: str,
    hparams_path: str,
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    model_dir: str,
    history_path: str,
    tracking_uri: str,
    parent_run_id: str,
) -> None:
    """Runs the step: fit on the best hyperparameters, export, log curves and the model."""
    with tracking.step_run(tracking_uri, parent_run_id, STEP):
        meta, train_ds, val_ds = load_training_data(
            splits_dir, train_dir, int(batch_size), int(seed)
        )
        hparams = json.loads(Path(hparams_path).read_text())
        tracking.log_params(
            {
                **{f"hp_{k}": v for k, v in hparams.items()},
                "epochs": int(epochs),
                "batch_size": int(batch_size),
            }
        )
        stepio.progress(STEP, f"fitting up to {int(epochs)} epochs on {hparams}")
        import mlflow

        model, history = fit_final(
            meta,
            train_ds,
            val_ds,
            hparams,
            int(epochs),
            int(patience),
            int(seed),
            class_weight_arg(meta),
            extra_callbacks=[tuning.EpochLogger.make()],
        )
        out = Path(model_dir)
        export_model(model, out)
        write_json_atomic(out / C.HISTORY_FILE, history)
        write_json_atomic(out / C.META_FILE, meta)
        fig = plot_history(history)
        Path(history_path).parent.mkdir(parents=True, exist_ok=True)
        Path(history_path).write_text(history_html(fig))
        tracking.log_figure(fig, "training_history.png")
        summary: list[str] = []
        model.summary(print_fn=lambda line, *_: summary.append(line))
        tracking.log_text_artifact("\n".join(summary), "model_summary.txt")
        mlflow.log_artifact(str(out / C.KERAS_MODEL_FILE), "model")
        tracking.log_dir_artifacts(out / C.SAVED_MODEL_DIR, "model/saved_model")
        stepio.progress(
            STEP,
            f"trained {len(history['loss'])} epochs; last val_loss {history['val_loss'][-1]:.4f}",
        )
