"""KFP component: evaluation and the promotion gate."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    splits: Input[Dataset],
    thresholds: dict,
    model_name: str,
    champion_tolerance: float,
    slice_by: str,
    tracking_uri: str,
    parent_run_id: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    predictions: Output[Dataset],
) -> bool:
    """Evaluates on the test split against thresholds and the champion; returns the blessing."""
    from kerasflow.components.evaluate import core

    result = core.run(
        model.path,
        splits.path,
        thresholds,
        report.path,
        predictions.path,
        tracking_uri,
        parent_run_id,
        model_name,
        champion_tolerance,
        slice_by,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    if result.confusion:
        classification.log_confusion_matrix(result.class_names, result.confusion)
    if result.roc:
        classification.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"])
    return result.blessed
