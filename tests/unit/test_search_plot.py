"""The tuning plot: log axes for log-sampled hyperparameters, Hyperband's budgets marked."""

import pytest

from components.hyperparameter_search.core import plot_trials
from kerasflow.modeling import search_space

pytestmark = pytest.mark.unit

ROWS = [
    {"trial_id": "0", "score": 0.80, "learning_rate": 0.001, "units": 16, "epochs": 2},
    {"trial_id": "1", "score": 0.85, "learning_rate": 0.004, "units": 32, "epochs": 2},
    {"trial_id": "2", "score": 0.90, "learning_rate": 0.008, "units": 32, "epochs": 6},
    {"trial_id": "3", "score": None, "learning_rate": 0.002, "units": 16, "epochs": 6},
]


def _axis(fig, label: str):
    return next(ax for ax in fig.axes if ax.get_xlabel() == label)


def test_a_log_sampled_learning_rate_gets_a_log_axis_even_within_a_decade():
    space = search_space.resolve_space(
        "tabular", {"learning_rate": {"min": 1e-3, "max": 1e-2, "sampling": "log"}}
    )
    assert "learning_rate" in search_space.log_sampled_names(space)
    fig = plot_trials(ROWS, "val_accuracy", ["learning_rate", "units"], ["learning_rate"])
    assert _axis(fig, "learning_rate").get_xscale() == "log"
    assert _axis(fig, "units").get_xscale() == "linear"
    linear = plot_trials(ROWS, "val_accuracy", ["learning_rate", "units"])
    assert _axis(linear, "learning_rate").get_xscale() == "linear"  # 8x apart, not declared log


def test_hyperband_budgets_are_a_legend_of_the_by_trial_panel():
    fig = plot_trials(ROWS, "val_accuracy", ["learning_rate"])
    legend = _axis(fig, "trial").get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["2 epochs", "6 epochs"]
    plain = [{k: v for k, v in r.items() if k != "epochs"} for r in ROWS]
    assert (
        _axis(plot_trials(plain, "val_accuracy", ["learning_rate"]), "trial").get_legend() is None
    )
