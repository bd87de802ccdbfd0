"""KFP component: normalize and split."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def normalize_split(
    dataset: Input[Dataset],
    settings: dict,
    seed: int,
    tracking_uri: str,
    parent_run_id: str,
    splits: Output[Dataset],
    report: Output[Markdown],
):
    """Splits the clean data (stratified, plain, time-ordered or with k folds), then fits on
    train only what needs statistics: outlier bounds, imputation, the preprocessing statistics
    and class weights.

    Args:
        dataset: The clean data from ingest_clean.
        settings: The step's other settings (kerasflow.settings.SplitSettings keys).
        seed: Random seed of the split.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        splits: The train, val and test splits with the fitted statistics in meta.json.
        report: What was fitted on the train split and applied to every split.
    """
    from kerasflow.components.normalize_split import core

    core.run(
        settings=settings,
        headline={"seed": seed},
        dataset_dir=dataset.path,
        splits_dir=splits.path,
        report_path=report.path,
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
    )
