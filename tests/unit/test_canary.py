"""The canary's config states, its judgement, and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.pipelines.cli import main
from kerasflow.runtime.errors import UserError
from kerasflow.serving import canary
from kerasflow.tracking import canary_config as cc
from kerasflow.tracking import registry

pytestmark = pytest.mark.unit


def test_config_moves_only_put_labels_on_versions_that_serve(tmp_path):
    serving = str(tmp_path)
    assert cc.stage(serving, "m", 1) is None  # nothing served: the deploy pins as usual
    registry.pin_serving_version(serving, "m", 1)
    registry.pin_serving_version(serving, "other", 5)
    assert cc.stage(serving, "m", 1) is None  # already the stable version
    cc.stage(serving, "m", 2)
    assert cc.read(serving, "m") == cc.Served((1, 2), {"stable": 1})
    cc.stage(serving, "m", 3)  # a newer canary replaces the one on trial
    served = cc.read(serving, "m")
    assert (served.stable, served.canary, served.versions) == (1, 3, (1, 3))
    assert cc.label(serving, "m").labels == {"stable": 1, "canary": 3}
    cc.move_stable(serving, "m", cc.read(serving, "m"))
    assert cc.read(serving, "m") == cc.Served((1, 3), {"stable": 3, "canary": 3})
    cc.keep_only(serving, "m", 3)
    assert cc.read(serving, "m") == cc.Served((3,), {"stable": 3})
    assert registry.served_versions(serving, "other") == ([5], {})
    with pytest.raises(UserError, match="has no canary"):
        cc.on_trial(serving, "m")


def test_rows_alike_compares_classes_or_values():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    other = np.array([[0.6, 0.4], [0.7, 0.3], [0.9, 0.1]])
    assert canary.rows_alike({"p": probs}, {"p": other}).tolist() == [True, False, True]
    values = np.array([[10.0], [0.5], [-3.0]])
    near = np.array([[10.9], [0.55], [-4.0]])
    assert canary.rows_alike({"v": values}, {"v": near}).tolist() == [True, True, False]


def test_judge_names_every_missed_limit():
    figures = canary.Figures(
        requests=10,
        stable_errors=0,
        canary_errors=2,
        stable_p50_ms=1.0,
        stable_p99_ms=2.0,
        canary_p50_ms=3.0,
        canary_p99_ms=4.0,
        rows_compared=10,
        rows_agreeing=5,
    )
    missed = canary.judge(figures, canary.Limits(0.1, 2.0, 0.9))
    assert [m.split()[0] for m in missed] == ["error", "p50", "agreement"]
    assert canary.judge(figures, canary.Limits(0.2, 3.0, 0.5)) == []
    assert figures.metrics()["latency_ratio"] == 3.0


def test_canary_without_a_staged_version_is_one_line_and_exit_2(tmp_path, capsys):
    registry.pin_serving_version(str(tmp_path), "m", 1)
    rows = tmp_path / "rows.json"
    rows.write_text("[[1.0]]")
    argv = ["canary", "--model-name", "m", "--input", str(rows), "--rest", "http://127.0.0.1:9"]
    assert main([*argv, "--serving-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "has no canary" in err and err.count("\n") == 1
