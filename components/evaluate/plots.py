"""Pictures of the test results: confusion matrix, ROC and precision-recall curves for
classification, residuals for regression (scikit-learn's displays on matplotlib figures), and
one HTML page that shows them all for KFP's UI."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

# Past this many classes, one curve per class is unreadable: the curves are micro-averaged.
MAX_CURVES = 10


def _figure(width: float = 5.5, height: float = 4.5) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def confusion_figure(y: np.ndarray, proba: np.ndarray, class_names: list[str]) -> Any:
    """The confusion matrix of the predicted classes (rows: true class)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.5, 0.45 * len(class_names) + 2.5)
    fig, ax = _figure(size + 1, size)
    ConfusionMatrixDisplay.from_predictions(
        y,
        proba.argmax(axis=1),
        labels=np.arange(proba.shape[1]),
        display_labels=class_names,
        ax=ax,
        colorbar=False,
        xticks_rotation=45 if len(class_names) > 4 else "horizontal",
    )
    ax.set_title("confusion matrix (test split)")
    fig.tight_layout()
    return fig


def _curve_figure(y: np.ndarray, proba: np.ndarray, names: list[str], kind: str) -> Any:
    from sklearn.metrics import PrecisionRecallDisplay, RocCurveDisplay

    display = RocCurveDisplay if kind == "roc" else PrecisionRecallDisplay
    fig, ax = _figure()
    if proba.shape[1] == 2:
        display.from_predictions(y, proba[:, 1], pos_label=1, ax=ax, name=names[1])
    elif proba.shape[1] > MAX_CURVES:
        onehot = np.eye(proba.shape[1])[y]
        display.from_predictions(onehot.ravel(), proba.ravel(), ax=ax, name="micro-average")
    else:
        for index, name in enumerate(names):
            if (y == index).any():
                display.from_predictions(y == index, proba[:, index], ax=ax, name=name)
    ax.set_title(("ROC" if kind == "roc" else "precision-recall") + " curve (test split)")
    ax.legend(fontsize="small", loc="lower right" if kind == "roc" else "lower left")
    fig.tight_layout()
    return fig


def classification_figures(
    y: np.ndarray, proba: np.ndarray, class_names: list[str]
) -> dict[str, Any]:
    """Figures by artifact name: confusion matrix, ROC curve, precision-recall curve."""
    names = list(class_names) or [str(i) for i in range(proba.shape[1])]
    return {
        "confusion_matrix.png": confusion_figure(y, proba, names),
        "roc_curve.png": _curve_figure(y, proba, names, "roc"),
        "pr_curve.png": _curve_figure(y, proba, names, "pr"),
    }


def regression_figures(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Figures by artifact name: residuals against predictions, predictions against truth."""
    from sklearn.metrics import PredictionErrorDisplay

    out = {}
    for name, kind in (
        ("residuals.png", "residual_vs_predicted"),
        ("predicted_vs_actual.png", "actual_vs_predicted"),
    ):
        fig, ax = _figure()
        PredictionErrorDisplay.from_predictions(
            np.ravel(y), np.ravel(pred), kind=kind, ax=ax, subsample=2000, random_state=0
        )
        ax.set_title(name[:-4].replace("_", " ") + " (test split)")
        fig.tight_layout()
        out[name] = fig
    return out


def png_bytes(fig: Any) -> bytes:
    """The figure as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def figures_html(figures: dict[str, Any], title: str) -> str:
    """One self-contained HTML page with every figure inline (KFP's UI shows HTML artifacts)."""
    parts = [f"<html><head><title>{html.escape(title)}</title></head><body>"]
    parts.append(f"<h2>{html.escape(title)}</h2>")
    for name, fig in figures.items():
        data = base64.b64encode(png_bytes(fig)).decode("ascii")
        parts.append(
            f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"/>'
            f"<figcaption>{html.escape(name)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def close_all(figures: dict[str, Any]) -> None:
    """Frees the figures' memory."""
    import matplotlib.pyplot as plt

    for fig in figures.values():
        plt.close(fig)
