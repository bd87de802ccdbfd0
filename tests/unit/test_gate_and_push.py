import numpy as np
import pytest

from kerasflow.components.deploy import core as deploy
from kerasflow.components.evaluate import core as evaluate
from kerasflow.runtime import fileio
from kerasflow.runtime.errors import UserError

pytestmark = pytest.mark.unit


def test_classification_metrics_from_probabilities():
    y = np.array([0, 0, 1, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    metrics, cm, roc = evaluate.classification_metrics(y, proba)
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert cm.tolist() == [[1, 1], [1, 2]]
    assert metrics["roc_auc"] == pytest.approx(5 / 6)
    assert len(roc["fpr"]) == len(roc["tpr"]) == len(roc["thresholds"])


def test_regression_metrics():
    m = evaluate.regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([[1.0], [2.0], [4.0]]))
    assert m["mae"] == pytest.approx(1 / 3)
    assert m["rmse"] == pytest.approx(np.sqrt(1 / 3))
    assert m["r2"] == pytest.approx(0.5)


def test_blessing_uses_direction_of_each_metric():
    blessed, reasons = evaluate.decide_blessing(
        {"accuracy": 0.95, "rmse": 2.0}, {"accuracy": 0.9, "rmse": 3.0}
    )
    assert blessed and len(reasons) == 2
    blessed, reasons = evaluate.decide_blessing({"accuracy": 0.85}, {"accuracy": 0.9})
    assert not blessed and "FAILS" in reasons[0]
    blessed, _ = evaluate.decide_blessing({"mae": 4.0}, {"mae": 3.0})
    assert not blessed


def test_default_thresholds_and_unknown_metric():
    meta = {"task": "regression"}
    result = evaluate.evaluate(meta, np.arange(10.0), np.arange(10.0), {})
    assert result.blessed and result.reasons[0].startswith("r2 = 1.0000 meets")
    with pytest.raises(UserError, match="unknown regression metric 'accuracy'"):
        evaluate.evaluate(meta, np.arange(10.0), np.arange(10.0), {"accuracy": 0.9})


def test_report_shows_decision_and_confusion_matrix():
    meta = {"task": "classification", "class_names": ["a", "b"]}
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]])
    result = evaluate.evaluate(meta, np.array([0, 1, 0]), proba, {"accuracy": 0.9})
    text = evaluate.render_report(result)
    assert "NOT BLESSED" in text and "| a | 1 | 1 |" in text


def test_push_allocates_growing_versions_and_never_overwrites(tmp_path):
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"model-1")
    serving = tmp_path / "serving"
    (serving / "m" / ".7.tmp-crashed").mkdir(parents=True)
    assert deploy.push(export, str(serving), "m") == (1, str(serving / "m" / "1"))
    (export / "saved_model.pb").write_bytes(b"model-2")
    assert deploy.push(export, str(serving), "m")[0] == 2
    assert (serving / "m" / "1" / "saved_model.pb").read_bytes() == b"model-1"
    assert deploy.existing_versions(str(serving / "m")) == [1, 2]
    with pytest.raises(FileExistsError):
        fileio.copy_dir_atomic(export, str(serving / "m" / "1"))
    leftovers = [p.name for p in (serving / "m").iterdir() if p.name.startswith(".")]
    assert leftovers == [".7.tmp-crashed"]


def test_atomic_json_write_leaves_no_temporaries(tmp_path):
    target = tmp_path / "a" / "state.json"
    fileio.write_json_atomic(target, {"v": 1})
    fileio.write_json_atomic(target, {"v": 2})
    assert target.read_text().count('"v": 2') == 1
    assert [p.name for p in target.parent.iterdir()] == ["state.json"]
