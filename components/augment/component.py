"""KFP component: augment the train split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def augment(
    splits: Input[Dataset],
    factor: int,
    seed: int,
    flip: bool,
    tracking_uri: str,
    parent_run_id: str,
    train_data: Output[Dataset],
    methods: str = "",
    synonyms: str = "",
):
    """Writes the train split (balanced first when asked) plus `factor` seeded augmented copies."""
    from kerasflow.components.augment import core

    core.run(
        splits.path,
        train_data.path,
        factor,
        seed,
        flip,
        tracking_uri,
        parent_run_id,
        methods=methods,
        synonyms=synonyms,
    )
