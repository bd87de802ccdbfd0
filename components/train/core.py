"""Final training on the best hyperparameters, then export for serving.

Early stopping, ReduceLROnPlateau (or a learning-rate schedule) and the best epoch's weights
(the best objective, ties going to the lower validation loss: `kerasflow.modeling.best_epoch`)
guard the fit; the best epoch's weights are restored at the end. On request the model is refit
on train+val for the best epoch count, and a retraining can start from the registry's current
champion instead of from scratch (a refit then starts from the champion too). The model is
saved as a `.keras` file and exported as a SavedModel whose `serving_default` signature takes raw
features (the preprocessing layers are inside the model).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kerasflow import constants as C
from kerasflow.data.feeds import class_weight_arg
from kerasflow.modeling import best_epoch, builders, distribute, transfer
from kerasflow.runtime import boundary, progress
from kerasflow.runtime.errors import UserError, first_line
from kerasflow.runtime.fileio import write_json_atomic
from kerasflow.settings import TrainSettings
from kerasflow.settings.base import choices_of
from kerasflow.tracking import registry, runs, tensorboard
from kerasflow.tuning import tuners

STEP = "train"
WARM_START_LR_FACTOR = 0.1
"""Fine-tuning a champion starts at this fraction of the tuned learning rate."""


def build_final_model(meta: dict, hparams: dict, build_fn: Any = None) -> Any:
    """The model the best hyperparameters describe, compiled."""
    hp = builders.fixed_hyperparameters(hparams)
    if build_fn is not None:
        from kerasflow.modeling.hypermodel import call_user_build

        return call_user_build(build_fn, hp, meta)
    return builders.build_model(hp, meta)


def schedule_for(name: str, learning_rate: float, epochs: int, steps_per_epoch: int) -> Any:
    """A Keras learning-rate schedule: cosine decay over the fit, or x0.9 per epoch."""
    import keras

    steps = max(1, int(steps_per_epoch))
    if name == "cosine":
        return keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=max(1, epochs) * steps, alpha=0.01
        )
    if name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(
            learning_rate, decay_steps=steps, decay_rate=0.9
        )
    known = ", ".join(c for c in choices_of(TrainSettings, "lr_schedule") if c)
    raise UserError(f"unknown lr_schedule '{name}' (choose from {known})")


def set_learning_rate(model: Any, learning_rate: Any) -> None:
    """Gives a compiled model a fresh optimizer of the same kind at `learning_rate`."""
    opt = model.optimizer
    config = {k: v for k, v in opt.get_config().items() if k != "learning_rate"}
    model.optimizer = type(opt)(learning_rate=learning_rate, **config)


def smooth_labels(model: Any, meta: dict, amount: float, *datasets: Any) -> tuple[Any, ...]:
    """Makes a classifier fit on one-hot targets smoothed by `amount`; returns its datasets.

    Keras' sparse cross-entropy has no label smoothing, so the model is recompiled with
    categorical cross-entropy and the datasets' class indices become one-hot rows. Regression
    models and an amount of 0 keep their loss and datasets.
    """
    if not amount or meta[C.META_TASK] != "classification":
        return datasets
    import keras
    import tensorflow as tf

    classes = len(meta[C.META_CLASS_NAMES])
    model.compile(
        optimizer=model.optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=amount),
        metrics=["accuracy"],
    )

    def one_hot(x: Any, y: Any) -> tuple[Any, Any]:
        return x, tf.one_hot(tf.cast(tf.reshape(y, [-1]), tf.int32), classes)

    return tuple(ds.map(one_hot) for ds in datasets)


def initial_learning_rate(model: Any) -> float:
    """The learning rate a compiled model's optimizer starts at."""
    import keras

    lr = model.optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(lr))


def fit_final(
    meta: dict,
    train_ds: Any,
    val_ds: Any,
    hparams: dict,
    *,
    epochs: int,
    patience: int,
    seed: int,
    class_weight: dict | None = None,
    extra_callbacks: list | None = None,
    label_smoothing: float = 0.0,
    objective: str = "",
    direction: str = "",
    lr_schedule: str = "",
    build_fn: Any = None,
    initial_model: Any = None,
) -> tuple[Any, dict]:
    """Builds the model from `hparams` (or fine-tunes `initial_model`) and fits it.

    Returns:
        The model with its best epoch's weights, and the history (`best_epoch` added).
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = (
        initial_model if initial_model is not None else build_final_model(meta, hparams, build_fn)
    )
    monitor, mode = tuners.resolve_objective(meta, objective, direction)
    if not monitor.startswith("val_"):
        monitor = f"val_{monitor}"
    if lr_schedule:
        steps = int(train_ds.cardinality())
        set_learning_rate(
            model, schedule_for(lr_schedule, initial_learning_rate(model), epochs, steps)
        )
    train_ds, val_ds = smooth_labels(model, meta, label_smoothing, train_ds, val_ds)
    keep_best = best_epoch.callback(monitor, mode, patience + 2)
    callbacks = [keep_best, *(extra_callbacks or [])]
    if not lr_schedule:
        callbacks.insert(
            1,
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=max(1, patience // 2 + 1), min_lr=1e-6
            ),
        )
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks,
        verbose=0,
        class_weight=class_weight,
    )
    out = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    out["best_epoch"] = [float(keep_best.best_epoch or 1)]
    return model, out


def refit_on_all(
    meta: dict,
    merged_ds: Any,
    hparams: dict,
    *,
    epochs: int,
    seed: int,
    class_weight: dict | None = None,
    label_smoothing: float = 0.0,
    lr_schedule: str = "",
    build_fn: Any = None,
    extra_callbacks: list | None = None,
    initial_model: Any = None,
) -> tuple[Any, dict]:
    """Fits on train+val for `epochs` (the best epoch count found with val).

    The model is a fresh one built from `hparams`, or `initial_model` (a warm start's champion,
    as loaded before the fit with validation) fine-tuned.
    """
    import keras

    keras.utils.set_random_seed(seed)
    model = (
        initial_model if initial_model is not None else build_final_model(meta, hparams, build_fn)
    )
    if lr_schedule:
        steps = int(merged_ds.cardinality())
        set_learning_rate(
            model, schedule_for(lr_schedule, initial_learning_rate(model), epochs, steps)
        )
    (merged_ds,) = smooth_labels(model, meta, label_smoothing, merged_ds)
    history = model.fit(
        merged_ds,
        epochs=epochs,
        verbose=0,
        class_weight=class_weight,
        callbacks=list(extra_callbacks or []),
    )
    return model, {f"refit_{k}": [float(v) for v in vals] for k, vals in history.history.items()}


def fine_tune_base(
    model: Any, meta: dict, history: dict, *, layers: int, epochs: int, **fit_args: Any
) -> tuple[Any, dict]:
    """Fine-tunes a transfer model's top base layers after its head's fit (see `fit_final`).

    The phase's epochs follow the head's in the history; when no fine-tuned epoch beats the
    head's best (by the same rule as the fit's best epoch), the head's weights are kept.
    """
    monitor, mode = tuners.resolve_objective(meta, fit_args["objective"], fit_args["direction"])
    monitor = monitor if monitor.startswith("val_") else f"val_{monitor}"
    head_weights = model.get_weights()
    tuned_lr = fit_args["hparams"].get("learning_rate")
    unfrozen = transfer.unfreeze_top(
        model, meta, layers, learning_rate=float(tuned_lr) if tuned_lr else None
    )
    boundary.progress(
        STEP, f"fine-tuning the top {unfrozen} layers of the base for up to {epochs} epochs"
    )
    model, tuned = fit_final(meta, initial_model=model, epochs=epochs, **fit_args)
    head_best = best_epoch.best_of(history, monitor, mode)[1]
    tuned_best = best_epoch.best_of(tuned, monitor, mode)[1]
    improved = tuned_best is not None and (
        head_best is None or best_epoch.better(tuned_best, head_best, mode)
    )
    if not improved:
        model.set_weights(head_weights)
    done = len(history["loss"])
    merged = {k: history.get(k, []) + v for k, v in tuned.items() if k != "best_epoch"}
    best = done + tuned["best_epoch"][0] if improved else history["best_epoch"][0]
    merged["best_epoch"] = [float(best)]
    runs.log_params({"fine_tune_layers": unfrozen, "fine_tune_improved": improved})
    return model, merged


def find_champion(tracking_uri: str, model_name: str) -> tuple[registry.Champion, Path] | None:
    """The registry's champion of `model_name` and its local `.keras` file; None when none.

    The champion is the version the registry's `champion` alias points at, the same one the
    promotion gate compares with and `kerasflow rollback` moves, so a rolled-back champion is
    the one fine-tuned.

    Raises:
        RegistryUnavailable: when the registry cannot say who the champion is.
        ChampionUnavailable: when its artifacts cannot be downloaded or hold no `.keras` file.
    """
    found = registry.download_champion(tracking_uri, model_name)
    if found is None:
        return None
    champion, local = found
    path = local / C.KERAS_MODEL_FILE
    if not path.is_file():
        raise registry.ChampionUnavailable(
            f"{champion.describe(model_name)} has no {C.KERAS_MODEL_FILE} to fine-tune"
        )
    return champion, path


def load_champion(
    path: str | Path, meta: dict, hparams: dict, build_fn: Any = None, *, name: str = ""
) -> tuple[Any, str]:
    """The champion ready to fine-tune, or (None, why not) when it does not fit this data.

    Raises:
        ChampionUnavailable: when the file does not load (`name` says which champion it is).
    """
    try:
        champion = builders.load_model(path, compile=False)
    except Exception as exc:
        first = first_line(exc)
        raise registry.ChampionUnavailable(
            f"{name or 'the champion'} does not load from {path}: {first}"
        ) from None
    fresh = build_final_model(meta, hparams, build_fn)

    def signature(model: Any) -> tuple:
        inputs = sorted((t.name, tuple(t.shape[1:])) for t in model.inputs)
        return inputs, tuple(model.outputs[0].shape[1:])

    if signature(champion) != signature(fresh):
        return None, "the champion's inputs or outputs differ from this data's"
    lr = initial_learning_rate(fresh) * WARM_START_LR_FACTOR
    champion.compile(
        optimizer=type(fresh.optimizer)(learning_rate=lr),
        loss=fresh.loss,
        metrics=["accuracy"] if meta[C.META_TASK] == "classification" else ["mae"],
    )
    return champion, ""


def export_model(model: Any, model_dir: Path, meta: dict) -> None:
    """Writes `model.keras` and the SavedModel export into `model_dir`.

    Classification exports also get a `classify` signature that answers with class names.
    """
    from kerasflow.modeling.export import export_saved_model

    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / C.KERAS_MODEL_FILE)
    export_saved_model(model, model_dir / C.SAVED_MODEL_DIR, meta)


def plot_history(history: dict):
    """Loss and metric curves, train against validation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [
        k
        for k in history
        if not k.startswith(("val_", "refit_")) and k not in ("learning_rate", "best_epoch")
    ]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    best = int(history.get("best_epoch", [0])[0])
    for ax, name in zip(axes[0], metrics, strict=True):
        ax.plot(range(1, len(history[name]) + 1), history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(
                range(1, len(history[f"val_{name}"]) + 1),
                history[f"val_{name}"],
                label="validation",
            )
        if best:
            ax.axvline(best, color="grey", linestyle=":", label="best epoch")
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


@boundary.step_entry(STEP, heavy_imports=("tensorflow", "keras"))
def run(
    *,
    settings: TrainSettings | dict[str, Any],
    headline: dict[str, Any] | None = None,
    splits_dir: str,
    train_dir: str,
    hparams_path: str,
    model_dir: str,
    history_path: str,
    tracking_uri: str,
    parent_run_id: str,
    trials_dir: str = "",
) -> None:
    """Runs the step: fit on the best hyperparameters, export, log curves and the model.

    Args:
        settings: The step's settings (a mapping is validated into TrainSettings).
        headline: The headline pipeline parameters the step reads (not in `settings`).
        splits_dir: The splits from normalize_split (validation data).
        train_dir: The augmented train split.
        hparams_path: The search's best hyperparameters (JSON).
        model_dir: Output folder: model.keras, the SavedModel, history and metadata.
        history_path: Output HTML of the train and validation curves.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        trials_dir: The search's finished trials, best first (an ensemble's members).
    """
    opts = TrainSettings.from_parameters(settings, headline)
    epochs, seed, lr_schedule = opts.final_epochs, opts.seed, opts.lr_schedule
    with runs.step_run(tracking_uri, parent_run_id, STEP, settings=opts):
        import mlflow

        from kerasflow.data.feeds import open_feed
        from kerasflow.tracking import models

        models.prewarm()
        if opts.deterministic:
            import tensorflow as tf

            # Seeds fix the initial weights and the shuffles; this fixes the ops' reductions.
            tf.config.experimental.enable_op_determinism()
        from kerasflow.modeling import search_space

        in_memory = bool(opts.ensemble > 1 or opts.base_model)
        feed = open_feed(splits_dir, train_dir, seed, opts.stream_rows, in_memory=in_memory)
        if feed.streamed:
            boundary.progress(
                STEP, f"reading {feed.rows[0]} train rows a row group at a time (stream_rows)"
            )
        meta, base = transfer.attach(feed.meta, feed.samples()[0], opts)
        if opts.export:
            from kerasflow.components.train.exports import check_exports

            check_exports(opts.export, meta)
        replicas = distribute.use_local_strategy()
        hparams = json.loads(Path(hparams_path).read_text())
        batch = int(hparams.get("batch_size", opts.batch_size))
        train_ds, val_ds = feed.datasets(batch)
        build_fn = search_space.load_build_function(opts.build_model) if opts.build_model else None
        champion, source, path, name = None, None, None, ""
        if opts.warm_start:
            found = find_champion(runs.resolve_uri(tracking_uri), opts.model_name)
            if found is None:
                why_not = f"model '{opts.model_name}' has no champion yet"
            else:
                source, path = found
                name = source.describe(opts.model_name)
                champion, why_not = load_champion(path, meta, hparams, build_fn, name=name)
            boundary.progress(
                STEP,
                f"fine-tuning the {name}"
                if champion is not None
                else f"training from scratch: {why_not}",
            )
        runs.log_params(
            {
                **{f"hp_{k}": v for k, v in hparams.items()},
                "epochs": epochs,
                "batch_size": batch,
                "refit": opts.refit,
                "lr_schedule": lr_schedule or "none",
                "label_smoothing": opts.label_smoothing,
                "warm_start": opts.warm_start,
                "ensemble": opts.ensemble,
                "ensemble_method": opts.ensemble_method if opts.ensemble > 1 else "none",
                "warm_started": champion is not None,
                **(
                    {"warm_start_registry_version": source.registry_version}
                    if champion is not None
                    else {}
                ),
            }
        )
        boundary.progress(STEP, f"fitting up to {epochs} epochs on {hparams}")
        monitor = tuners.resolve_objective(meta, opts.objective, opts.direction)[0]
        shown = monitor if monitor.startswith("val_") else f"val_{monitor}"
        model, history = fit_final(
            meta,
            train_ds,
            val_ds,
            hparams,
            epochs=epochs,
            patience=opts.patience,
            seed=seed,
            class_weight=class_weight_arg(meta),
            extra_callbacks=[
                tuners.EpochLogger.make(),
                progress.epoch_callback(STEP, epochs, shown),
                *tensorboard.callbacks(opts.tensorboard, Path(model_dir, C.TENSORBOARD_DIR)),
            ],
            label_smoothing=opts.label_smoothing,
            objective=opts.objective,
            direction=opts.direction,
            lr_schedule=lr_schedule,
            build_fn=build_fn,
            initial_model=champion,
        )
        if base and opts.fine_tune_epochs:
            model, history = fine_tune_base(
                model,
                meta,
                history,
                layers=opts.fine_tune_layers,
                epochs=opts.fine_tune_epochs,
                train_ds=train_ds,
                val_ds=val_ds,
                hparams=hparams,
                patience=opts.patience,
                seed=seed,
                class_weight=class_weight_arg(meta),
                label_smoothing=opts.label_smoothing,
                objective=opts.objective,
                direction=opts.direction,
                lr_schedule=lr_schedule,
            )
        runs.log_params({"replicas": replicas, **{f"transfer_{k}": v for k, v in base.items()}})
        best = int(history["best_epoch"][0])
        mlflow.log_metric("best_epoch", best)
        if opts.refit:
            # The fit above changed the champion's weights in place: the refit starts again
            # from the champion as it serves, like the fit with validation did.
            start = (
                load_champion(path, meta, hparams, build_fn, name=name)[0]
                if champion is not None
                else None
            )
            boundary.progress(
                STEP,
                f"refitting {'the champion' if start is not None else 'a fresh model'} on "
                f"train+val for {best} epochs",
            )
            merged = feed.merged(batch, seed)
            model, extra = refit_on_all(
                meta,
                merged,
                hparams,
                epochs=best,
                seed=seed,
                class_weight=class_weight_arg(meta),
                label_smoothing=opts.label_smoothing,
                lr_schedule=lr_schedule,
                build_fn=build_fn,
                initial_model=start,
            )
            history.update(extra)
        members = []
        if opts.ensemble > 1:
            from kerasflow.components.train import ensemble

            model, history, members = ensemble.fit_ensemble(
                model, history, hparams, opts=opts, arrays=feed.arrays, trials_dir=trials_dir,
                build_fn=build_fn,
                log_dir=Path(model_dir, C.TENSORBOARD_DIR) if opts.tensorboard else None,
            )  # fmt: skip
        out = Path(model_dir)
        export_model(model, out, meta)
        if members:
            runs.log_dict_artifact(ensemble.save_members(members, out, opts, meta), C.ENSEMBLE_FILE)
        if opts.export:
            from kerasflow.components.train.exports import run_exports

            run_exports(opts.export, out, splits_dir, feed, seed)
        tensorboard.log_artifacts(out / C.TENSORBOARD_DIR)
        write_json_atomic(out / C.HISTORY_FILE, history)
        write_json_atomic(out / C.META_FILE, meta)
        fig = plot_history(history)
        Path(history_path).parent.mkdir(parents=True, exist_ok=True)
        Path(history_path).write_text(history_html(fig))
        runs.log_figure(fig, "training_history.png")
        summary: list[str] = []
        model.summary(print_fn=lambda line, *_: summary.append(line))
        runs.log_text_artifact("\n".join(summary), "model_summary.txt")
        # The Keras flavor's LoggedModel is what the registry version is created from; the
        # SavedModel TF Serving loads, exported from the same weights, stays a run artifact.
        logged = models.log_keras_model(model, models.example_rows(feed.samples()[1]))
        mlflow.set_tag(C.TAG_LOGGED_MODEL_URI, logged.model_uri)
        runs.log_dir_artifacts(out / C.SAVED_MODEL_DIR, "model/saved_model")
        boundary.progress(
            STEP,
            f"trained {len(history['loss'])} epochs (best {best}); "
            f"last val_loss {history['val_loss'][-1]:.4f}",
        )
