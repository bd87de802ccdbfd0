"""KFP component: ingest and clean."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def ingest_clean(
    settings: dict,
    data: str,
    label: str,
    task: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    dataset: Output[Dataset],
    report: Output[Markdown],
    schema: Output[Artifact],
    profile: Output[HTML],
) -> str:
    """Reads the data, validates them against a saved schema (when given) and cleans them.

    Args:
        settings: The step's other settings (kerasflow.settings.IngestSettings keys).
        data: Data URI: builtin:NAME, a file or class folder, local or gs://.
        label: Label column of table data.
        task: classification or regression (inferred when empty).
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment of the pipeline run.
        kfp_run_id: The KFP run id; the pipeline's MLflow run is found or created from it.
        dataset: The clean data (a Dataset folder: meta.json plus data files).
        report: Every change cleaning made.
        schema: The inferred schema (schema.json), to validate later data against.
        profile: Per-column statistics and histograms.

    Returns:
        The MLflow run id of the pipeline run.
    """
    from kerasflow.components.ingest_clean import core

    return core.run(
        settings=settings,
        headline={"data": data, "label": label, "task": task},
        tracking_uri=tracking_uri,
        experiment=experiment,
        kfp_run_id=kfp_run_id,
        dataset_dir=dataset.path,
        report_path=report.path,
        schema_dir=schema.path,
        profile_path=profile.path,
    )
