"""KFP component: hyperparameter search with KerasTuner."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def hyperparameter_search(
    splits: Input[Dataset],
    train_data: Input[Dataset],
    tuner: str,
    max_trials: int,
    max_epochs: int,
    batch_size: int,
    patience: int,
    seed: int,
    tuner_dir: str,
    tracking_uri: str,
    parent_run_id: str,
    best_hyperparameters: Output[Artifact],
    summary: Output[Markdown],
):
    """Searches the model space; writes the best hyperparameters as JSON."""
    import os

    from kerasflow.components.hyperparameter_search import core

    core.run(
        splits.path,
        train_data.path,
        tuner,
        max_trials,
        max_epochs,
        batch_size,
        patience,
        seed,
        tuner_dir or os.path.join(os.path.dirname(summary.path), "tuner"),
        best_hyperparameters.path,
        summary.path,
        tracking_uri,
        parent_run_id,
    )
