"""KFP component: validate and push to the serving directory."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    splits: Input[Dataset],
    predictions: Input[Dataset],
    serving_dir: str,
    model_name: str,
    tracking_uri: str,
    parent_run_id: str,
) -> str:
    """Publishes a new serving version of a blessed model; returns its path."""
    from kerasflow.components.deploy import core

    return core.run(
        model.path,
        splits.path,
        predictions.path,
        serving_dir,
        model_name,
        tracking_uri,
        parent_run_id,
    )
