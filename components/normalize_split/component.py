"""KFP component: normalize and split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def normalize_split(
    dataset: Input[Dataset],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    tracking_uri: str,
    parent_run_id: str,
    splits: Output[Dataset],
    report: Output[Markdown],
    scaling: str = "zscore",
    imbalance: str = "class_weights",
    time_column: str = "",
    folds: int = 0,
):
    """Splits the clean data (stratified, plain, time-ordered or with k folds), then fits on
    train only what needs statistics: outlier bounds, imputation, the preprocessing statistics
    and class weights."""
    from kerasflow.components.normalize_split import core

    core.run(
        dataset.path,
        splits.path,
        report.path,
        val_fraction,
        test_fraction,
        seed,
        tracking_uri,
        parent_run_id,
        scaling=scaling,
        imbalance=imbalance,
        time_column=time_column,
        folds=folds,
    )
