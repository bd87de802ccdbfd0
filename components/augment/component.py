"""KFP component: augment the train split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def augment(
    splits: Input[Dataset],
    settings: dict,
    seed: int,
    tracking_uri: str,
    parent_run_id: str,
    train_data: Output[Dataset],
):
    """Writes the train split (balanced first when asked) plus seeded augmented copies.

    Args:
        splits: The splits from normalize_split.
        settings: The step's other settings (kerasflow.settings.AugmentSettings keys).
        seed: Random seed of the augmentation.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        train_data: The augmented train split.
    """
    from kerasflow.components.augment import core

    core.run(
        settings=settings,
        headline={"seed": seed},
        splits_dir=splits.path,
        out_dir=train_data.path,
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
    )
