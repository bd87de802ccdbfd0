"""A drift report as a short text table, a self-contained HTML page and MLflow metrics."""

from __future__ import annotations

import base64
import html
import re

import numpy as np

from kerasflow.monitoring.drift import DriftReport

MAX_PLOTS = 12


def table(report: DriftReport) -> str:
    """The tests as a fixed-width table, drifted ones marked, and a verdict line."""
    head = ("feature", "test", "stat", "p", "p adj", "effect", "drift")
    rows = [
        (
            t.name,
            t.test,
            f"{t.statistic:.4g}",
            f"{t.p_value:.3g}",
            f"{t.p_adjusted:.3g}",
            f"{t.effect} {t.effect_value:.3g}",
            "DRIFT" if t.drifted else "-",
        )
        for t in report.tests
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in
             [head, *rows]]  # fmt: skip
    verdict = (
        f"drift in {len(report.drifted_features)} of {len(report.tests)} tests: "
        + ", ".join(report.drifted_features)
        if report.drifted
        else f"no drift in {len(report.tests)} tests"
    )
    return "\n".join([*lines, verdict])


def metrics(report: DriftReport) -> dict[str, float]:
    """MLflow metrics: the verdict, the count of drifted tests and each test's figures."""
    out = {"drifted": float(report.drifted), "drifted_tests": float(len(report.drifted_features))}
    for t in report.tests:
        key = re.sub(r"[^0-9A-Za-z_\-./ ]", "_", t.name)
        out[f"p_value/{key}"] = t.p_value
        out[f"p_adjusted/{key}"] = t.p_adjusted
        out[f"{t.effect}/{key}"] = t.effect_value
    return {k: float(v) for k, v in out.items() if np.isfinite(v)}


def figure_png(report: DriftReport) -> bytes | None:
    """Reference and current histograms of the tests that compared numbers (None: no such)."""
    shown = [t for t in report.tests if t.reference_values is not None][:MAX_PLOTS]
    if not shown:
        return None
    from kerasflow.data import profile

    fig, axes = profile._figure(len(shown))
    for ax, test in zip(axes, shown, strict=True):
        ref, cur = np.asarray(test.reference_values), np.asarray(test.current_values)
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins=30)
        ax.hist(ref, bins=bins, density=True, alpha=0.5, color="#4477aa", label="reference")
        ax.hist(cur, bins=bins, density=True, alpha=0.5, color="#ee6677", label="current")
        ax.set_title(test.name + (" (drift)" if test.drifted else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    png = profile.figure_png(fig)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return png


def render_html(report: DriftReport, title: str) -> str:
    """A self-contained page: the verdict, the table of tests and the histograms."""
    keys = ("name", "kind", "test", "statistic", "p_value", "p_adjusted", "effect",
            "effect_value", "threshold", "rows", "drifted")  # fmt: skip
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = []
    for t in report.tests:
        row = t.as_dict()
        style = " style='background:#fdd'" if t.drifted else ""
        cells = "".join(f"<td>{_cell(row[k])}</td>" for k in keys)
        body.append(f"<tr{style}>{cells}</tr>")
    png = figure_png(report)
    image = f'<img src="data:image/png;base64,{base64.b64encode(png).decode()}"/>' if png else ""
    verdict = (
        f"Drift in {', '.join(map(html.escape, report.drifted_features))}"
        if report.drifted
        else "No drift"
    )
    opts = report.options
    return (
        "<html><head><meta charset='utf-8'><style>"
        "body{font-family:sans-serif}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}</style></head><body>"
        f"<h2>{html.escape(title)}</h2><p><b>{verdict}</b>: {report.current_rows} rows of "
        f"{html.escape(report.source)} against {report.reference_rows} training rows; alpha "
        f"{opts.alpha} after {opts.correction} correction, PSI at least {opts.min_psi}.</p>"
        f"<table><tr>{head}</tr>{''.join(body)}</table>{image}</body></html>"
    )


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))
