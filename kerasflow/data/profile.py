"""Data profiles: per-column statistics and histograms, as a PNG and a self-contained HTML page.

The profile describes the clean data a model is trained on (tables: every column; images:
class counts and pixel intensities; text: class counts and lengths). The HTML page embeds its
figure, so the KFP UI shows it as one artifact.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

MAX_PLOTS = 24
TOP_CATEGORIES = 10


def column_stats(frame: Any) -> list[dict]:
    """One row of statistics per column: type, counts, missing share, spread or top values."""
    import pandas as pd

    rows = []
    for col in frame.columns:
        series = frame[col]
        row: dict[str, Any] = {
            "column": str(col),
            "count": int(series.notna().sum()),
            "missing_share": round(float(series.isna().mean()), 4),
            "distinct": int(series.nunique(dropna=True)),
        }
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            values = series.dropna().astype("float64")
            row["type"] = "numeric"
            if len(values):
                q = np.percentile(values, [0, 25, 50, 75, 100])
                row.update(
                    mean=float(values.mean()),
                    std=float(values.std(ddof=0)),
                    min=float(q[0]),
                    p25=float(q[1]),
                    median=float(q[2]),
                    p75=float(q[3]),
                    max=float(q[4]),
                )
        else:
            counts = text_counts(series)
            row["type"] = "text"
            if len(counts):
                row.update(
                    top=str(counts.index[0]), top_share=round(counts.iloc[0] / len(series), 4)
                )
        rows.append(row)
    return rows


def text_counts(series: Any) -> Any:
    """How many rows hold each present value, counted by the value's text, most first (ties in
    order of first appearance). Each distinct value is made text once, not each row."""
    counts = series.value_counts(dropna=True, sort=False)
    counts = counts[counts > 0]
    counts.index = counts.index.astype(str)
    counts = counts.groupby(level=0, sort=False).sum()
    return counts.sort_values(ascending=False, kind="stable")


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(4, max(1, n))
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def table_figure(frame: Any, label: str = "") -> Any:
    """Histograms of numeric columns and bar charts of the most frequent text values."""
    import pandas as pd

    columns = list(frame.columns)[:MAX_PLOTS]
    fig, axes = _figure(len(columns))
    for ax, col in zip(axes, columns, strict=True):
        series = frame[col].dropna()
        if pd.api.types.is_numeric_dtype(series) and col != label:
            ax.hist(series.astype("float64"), bins=30, color="#4477aa")
        else:
            top = text_counts(series).head(TOP_CATEGORIES)
            ax.barh([t[:18] for t in top.index[::-1]], top.to_numpy()[::-1], color="#228833")
        ax.set_title(str(col) + (" (label)" if col == label else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def image_figure(x: np.ndarray, y: np.ndarray, class_names: list[str]) -> Any:
    """Class counts, pixel intensity histogram and one example per class (up to 6)."""
    shown = list(range(min(len(class_names), 6)))
    fig, axes = _figure(2 + len(shown))
    counts = np.bincount(y.astype(int), minlength=len(class_names))
    axes[0].bar([n[:10] for n in class_names], counts, color="#228833")
    axes[0].set_title("rows per class", fontsize=9)
    axes[0].tick_params(labelsize=7)
    sample = x[np.random.default_rng(0).choice(len(x), min(len(x), 500), replace=False)]
    axes[1].hist(sample.reshape(-1), bins=32, color="#4477aa")
    axes[1].set_title("pixel values", fontsize=9)
    for ax, cls in zip(axes[2:], shown, strict=True):
        where = np.flatnonzero(y == cls)
        if len(where):
            ax.imshow(_displayable(x[where[0]]), cmap="gray")
        ax.set_title(class_names[cls][:18], fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def _displayable(img: np.ndarray) -> np.ndarray:
    low, high = float(img.min()), float(img.max())
    img = (img - low) / (high - low or 1.0)
    return img[..., 0] if img.shape[-1] == 1 else img


def text_stats(texts: Any) -> dict:
    """Length statistics of a text column, in words."""
    words = np.asarray([len(str(t).split()) for t in texts])
    return {
        "rows": int(len(words)),
        "mean_words": float(words.mean()) if len(words) else 0.0,
        "median_words": float(np.median(words)) if len(words) else 0.0,
        "max_words": int(words.max()) if len(words) else 0,
    }


def figure_png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def render_html(title: str, stats: list[dict], png: bytes) -> str:
    """A self-contained HTML page: the statistics table and the embedded figure."""
    keys = list(dict.fromkeys(k for row in stats for k in row))
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(k, ''))}</td>" for k in keys) + "</tr>"
        for row in stats
    )
    image = base64.b64encode(png).decode()
    return (
        "<html><head><meta charset='utf-8'><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"
        f'<img src="data:image/png;base64,{image}"/></body></html>'
    )


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))
