"""KFP component: the pipeline's exit handler, which ends its MLflow run whatever happened."""

from kfp import dsl

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def finalize(
    status: dsl.PipelineTaskFinalStatus,
    tracking_uri: str,
    experiment: str,
    kfp_run_id: str,
):
    """Ends the pipeline's MLflow run FINISHED, FAILED or KILLED, and any step run left open.

    Runs after every other task, whether they succeeded, failed or were cancelled; it also
    reconciles runs of the experiment whose owner's lease expired.

    Args:
        status: The pipeline's final status (set by KFP).
        tracking_uri: MLflow tracking URI (else the step's MLFLOW_TRACKING_URI).
        experiment: MLflow experiment name.
        kfp_run_id: The KFP run whose MLflow run ends.
    """
    from kerasflow.components.finalize import core

    core.run(
        state=status.state,
        error=status.error_message,
        tracking_uri=tracking_uri,
        experiment=experiment,
        kfp_run_id=kfp_run_id,
    )
