"""KFP component: ingest and clean."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Markdown, Output

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
    schema: Output[Artifact],
    profile: Output[HTML],
    text_column: str = "",
    time_column: str = "",
    image_size: str = "",
    missing_values: str = "median",
    outliers: str = "iqr",
    outlier_action: str = "clip",
    drop_duplicates: bool = True,
    drop_id_columns: bool = True,
    expected_schema: str = "",
    max_missing_share: float = 0.3,
    max_anomaly_share: float = 0.01,
    min_class_rows: int = 3,
) -> str:
    """Reads `data`, validates it against `expected_schema` (when given), cleans it and writes
    a bundle, a report, the inferred schema and a profile; returns the pipeline's MLflow run id.
    """
    from kerasflow.components.ingest_clean import core

    return core.run(
        data,
        label,
        tracking_uri,
        experiment,
        kfp_run_id,
        dataset.path,
        report.path,
        schema.path,
        profile.path,
        task=task,
        modality=modality,
        text_column=text_column,
        time_column=time_column,
        image_size=image_size,
        missing_values=missing_values,
        outliers=outliers,
        outlier_action=outlier_action,
        drop_duplicates=drop_duplicates,
        drop_id_columns=drop_id_columns,
        schema=expected_schema,
        max_missing_share=max_missing_share,
        max_anomaly_share=max_anomaly_share,
        min_class_rows=min_class_rows,
    )
