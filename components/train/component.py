"""KFP component: final training and export."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    best_hyperparameters: Input[Artifact],
    trials: Input[Artifact],
    settings: dict,
    final_epochs: int,
    seed: int,
    build_model: str,
    model_name: str,
    serving_dir: str,
    tracking_uri: str,
    parent_run_id: str,
    model: Output[Model],
    history: Output[HTML],
):
    """Fits the model on the best hyperparameters and exports it for serving.

    Args:
        splits: The splits from normalize_split (validation data).
        train_data: The augmented train split.
        best_hyperparameters: The search's best hyperparameters.
        trials: The search's finished trials, best first (an ensemble's members).
        settings: The step's other settings (kerasflow.settings.TrainSettings keys).
        final_epochs: Most epochs of the final fit.
        seed: Random seed of the fit.
        build_model: Your own model, module:function taking hp (empty: kerasflow's).
        model_name: The served model, fine-tuned on a warm start.
        serving_dir: TF Serving model base directory, read on a warm start.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        model: model.keras and the SavedModel export.
        history: The train and validation curves.
    """
    from kerasflow.components.train import core

    core.run(
        settings=settings,
        headline={
            "final_epochs": final_epochs,
            "seed": seed,
            "build_model": build_model,
            "model_name": model_name,
            "serving_dir": serving_dir,
        },
        splits_dir=splits.path,
        train_dir=train_data.path,
        hparams_path=best_hyperparameters.path,
        trials_dir=trials.path,
        model_dir=model.path,
        history_path=history.path,
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
    )
