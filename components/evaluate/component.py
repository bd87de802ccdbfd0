"""KFP component: evaluation and the promotion gate."""

from kfp import dsl
from kfp.dsl import (
    HTML,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from kerasflow.settings import DEFAULT_IMAGE


@dsl.component(base_image=DEFAULT_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    splits: Input[Dataset],
    settings: dict,
    thresholds: dict,
    model_name: str,
    tracking_uri: str,
    parent_run_id: str,
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    predictions: Output[Dataset],
    pictures: Output[HTML],
) -> bool:
    """Evaluates on the test split against thresholds and the champion; returns the blessing.

    Args:
        model: The trained model.
        splits: The splits from normalize_split (the test split).
        settings: The step's other settings (kerasflow.settings.EvaluateSettings keys).
        thresholds: Blessing thresholds, metric -> value (empty: the task's default).
        model_name: The served model whose champion the candidate must not fall behind.
        tracking_uri: MLflow tracking URI.
        parent_run_id: The pipeline's MLflow run.
        metrics: Test metrics.
        classification: Confusion matrix and ROC curve (classification).
        report: The metrics and the reasons of the blessing.
        predictions: The model's test predictions, which deploy checks the export against.
        pictures: Confusion matrix, ROC and precision-recall curves, or residual plots.

    Returns:
        Whether deploy runs: the model is blessed and publishing is on.
    """
    from kerasflow.components.evaluate import core

    result = core.run(
        settings=settings,
        headline={"thresholds": thresholds, "model_name": model_name},
        model_dir=model.path,
        splits_dir=splits.path,
        report_path=report.path,
        predictions_dir=predictions.path,
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        pictures_path=pictures.path,
    )
    for name, value in result.metrics.items():
        metrics.log_metric(name, value)
    if result.confusion:
        classification.log_confusion_matrix(result.class_names, result.confusion)
    if result.roc:
        classification.log_roc_curve(result.roc["fpr"], result.roc["tpr"], result.roc["thresholds"])
    return result.deploy
