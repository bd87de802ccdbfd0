"""KFP component: drift check."""

from kfp import dsl
from kfp.dsl import HTML, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def drift_check(
    settings: dict,
    data: str,
    model_name: str,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
    report: Output[HTML],
) -> bool:
    """Tests the data against the serving champion's training data (kerasflow.monitoring).

    Args:
        settings: The drift thresholds (kerasflow.settings.DriftSettings keys).
        data: The data URI the pipeline trains on.
        model_name: The served model whose champion is compared with.
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment of the pipeline run.
        kfp_run_id: The KFP run id; the pipeline's MLflow run is found or created from it.
        report: The drift tests, the verdict and histograms.

    Returns:
        Whether the data drifted (also True when there is no champion to compare with).
    """
    from kerasflow.components.drift_check import core

    return core.run(
        settings=settings,
        data=data,
        model_name=model_name,
        tracking_uri=tracking_uri,
        experiment=experiment,
        kfp_run_id=kfp_run_id,
        report_path=report.path,
    )
