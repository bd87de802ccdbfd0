"""KFP component: validate and push to the serving directory."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    splits: Input[Dataset],
    predictions: Input[Dataset],
    settings: dict,
    model_name: str,
    serving_dir: str,
    tracking_uri: str,
    parent_run_id: str,
) -> str:
    """Publishes a new serving version of a blessed model; returns its path.

    Args:
        model: The blessed model.
        splits: The splits from normalize_split (the test split, for infra validation).
        predictions: Evaluation's test predictions, which the served export must reproduce.
        settings: The step's other settings (kerasflow.settings.DeploySettings keys).
        model_name: Name of the served model.
        serving_dir: TF Serving model base directory (local path or gs://).
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.

    Returns:
        The path of the published version.
    """
    from kerasflow.components.deploy import core

    return core.run(
        settings=settings,
        headline={"model_name": model_name, "serving_dir": serving_dir},
        model_dir=model.path,
        splits_dir=splits.path,
        predictions_dir=predictions.path,
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
    )
