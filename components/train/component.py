"""KFP component: final training and export."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Model, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def train(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    best_hyperparameters: Input[Artifact],
    epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    tracking_uri: str,
    parent_run_id: str,
    model: Output[Model],
    history: Output[HTML],
    objective: str = "",
    direction: str = "",
    refit: bool = False,
    lr_schedule: str = "",
    warm_start: bool = False,
    serving_dir: str = "",
    model_name: str = "",
    build_model: str = "",
):
    """Fits the model on the best hyperparameters and exports it for serving."""
    from kerasflow.components.train import core

    core.run(
        splits.path,
        train_data.path,
        best_hyperparameters.path,
        epochs,
        batch_size,
        patience,
        seed,
        model.path,
        history.path,
        tracking_uri,
        parent_run_id,
        objective=objective,
        direction=direction,
        refit=refit,
        lr_schedule=lr_schedule,
        warm_start=warm_start,
        serving_dir=serving_dir,
        model_name=model_name,
        build_model=build_model,
    )
