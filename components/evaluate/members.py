"""An ensemble's members on the test split, beside the ensemble itself.

The train step leaves `ensemble.json` and each member's `.keras` file in the model artifact.
Every member is scored on the same test rows as the ensemble; the report and the tracked
metrics name the best member by validation score (the one a single-model run would have
served) and how the ensemble compares with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.modeling import builders

ENSEMBLE_TAG = C.TAG_ENSEMBLE


def read_ensemble(model_dir: str | Path) -> dict | None:
    """The model's `ensemble.json`, or None for a single model."""
    path = Path(model_dir, C.ENSEMBLE_FILE)
    return json.loads(path.read_text()) if path.is_file() else None


def headline_metric(meta: dict) -> str:
    """The test metric the comparison leads with: accuracy, or RMSE for regression."""
    return "accuracy" if meta[C.META_TASK] == "classification" else "rmse"


def score_members(
    info: dict, model_dir: str | Path, meta: dict, test: artifacts.Part, metrics: Any
) -> list[dict[str, float]]:
    """Each member's test metrics (`metrics(meta, y, outputs)`), in the members' order."""
    from kerasflow.components.evaluate.core import predict

    y = artifacts.targets(meta, test)
    out = []
    for member in info["members"]:
        model = builders.load_model(Path(model_dir, member["file"]), compile=False)
        out.append(metrics(meta, y, np.asarray(predict(model, meta, test))))
    return out


def comparison(info: dict, member_metrics: list[dict], ensemble_metrics: dict, meta: dict) -> dict:
    """The ensemble against its best member by validation score, and every member's scores."""
    best = int(info["best_member"])
    metric = headline_metric(meta)
    return {
        "method": info["method"],
        "weighting": info["weighting"],
        "objective": info["objective"],
        "metric": metric,
        "best_member": best,
        "best_member_trial": info["members"][best]["trial_id"],
        "ensemble_test": ensemble_metrics.get(metric),
        "best_member_test": member_metrics[best].get(metric),
        "members": [
            {
                "trial_id": m["trial_id"],
                "val_score": m["val_score"],
                "weight": m["weight"],
                "test_metrics": scores,
            }
            for m, scores in zip(info["members"], member_metrics, strict=True)
        ],
    }


def render(summary: dict) -> str:
    """The report's section: one row per member and one for the ensemble."""
    metric, best = summary["metric"], summary["best_member"]
    lines = [
        "",
        f"## Ensemble ({summary['method']}, {len(summary['members'])} members)",
        "",
        f"Test {metric}: ensemble {summary['ensemble_test']:.4f}, best member by "
        f"{summary['objective']} (trial {summary['best_member_trial']}) "
        f"{summary['best_member_test']:.4f}.",
        "",
        f"| member | trial | {summary['objective']} | weight | test {metric} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, m in enumerate(summary["members"]):
        val = "" if m["val_score"] is None else f"{m['val_score']:.4f}"
        weight = "" if m["weight"] is None else f"{m['weight']:.3f}"
        mark = " (best)" if i == best else ""
        lines.append(
            f"| {i}{mark} | {m['trial_id']} | {val} | {weight} | "
            f"{m['test_metrics'].get(metric, float('nan')):.4f} |"
        )
    lines.append(f"| ensemble | | | | {summary['ensemble_test']:.4f} |")
    return "\n".join(lines) + "\n"


def tracked_metrics(summary: dict) -> dict[str, float]:
    """MLflow metrics of the comparison: the best member's and each member's test scores."""
    best = summary["members"][summary["best_member"]]["test_metrics"]
    out = {f"best_member_test_{k}": v for k, v in best.items()}
    for i, m in enumerate(summary["members"]):
        out |= {f"member_{i}_test_{k}": v for k, v in m["test_metrics"].items()}
    return out
