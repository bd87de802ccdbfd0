"""KFP component: ingest and clean."""

from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def ingest_clean(
    data: str,
    label: str,
    task: str,
    modality: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    dataset: Output[Dataset],
    report: Output[Markdown],
) -> str:
    """Reads `data`, cleans it and writes a bundle; returns the pipeline's MLflow run id."""
    from kerasflow.components.ingest_clean import core

    return core.run(
        data, label, task, modality, tracking_uri, experiment, kfp_run_id, dataset.path, report.path
    )
