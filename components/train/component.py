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
    )
