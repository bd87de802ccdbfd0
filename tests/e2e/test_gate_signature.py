"""The promotion gate compares serving signatures with a real champion: one pushed with
class labels blocks a candidate whose labels changed, unless the change is declared, and the
decision reaches the report and MLflow."""

from __future__ import annotations

import shutil

import mlflow
import pytest

from kerasflow import constants as C
from kerasflow.components.evaluate import core as evaluate
from kerasflow.data import artifacts
from kerasflow.modeling import builders
from kerasflow.modeling.export import export_saved_model
from tests.e2e import test_gate_and_push as gate

world = gate.world  # the same splits, models and pipeline run as the gate's other tests
run_deploy = gate.run_deploy

pytestmark = pytest.mark.e2e

NAME = "gate-signature"


def labelled(world, which: str, class_names: list[str]) -> None:
    """The good model exported with a `classify` signature answering `class_names`."""
    folder = world["root"] / which
    if folder.exists():
        return
    meta = {**artifacts.load_meta(world["splits"]), C.META_CLASS_NAMES: class_names}
    folder.mkdir()
    shutil.copy(world["dirs"]["good"] / C.KERAS_MODEL_FILE, folder / C.KERAS_MODEL_FILE)
    model = builders.load_model(folder / C.KERAS_MODEL_FILE)
    export_saved_model(model, folder / C.SAVED_MODEL_DIR, meta)
    world["dirs"][which] = folder


def run_evaluate(world, which: str, allow: bool = False) -> evaluate.Evaluation:
    return gate.run_evaluate(world, which, NAME, allow_signature_change=allow)


def evaluate_tags(world) -> dict[str, str]:
    client = mlflow.MlflowClient(world["uri"])
    parent = client.get_run(world["parent"])
    (last, *_) = client.search_runs(
        [parent.info.experiment_id],
        f"tags.mlflow.parentRunId = '{world['parent']}' and tags.`{C.TAG_STEP}` = 'evaluate'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return last.data.tags


def test_changed_class_labels_block_the_candidate_unless_declared(world, tmp_path):
    names = list(artifacts.load_meta(world["splits"])[C.META_CLASS_NAMES])
    labelled(world, "labelled", names)
    labelled(world, "relabelled", names[::-1])
    first = run_evaluate(world, "labelled")
    assert first.blessed and first.signature_changes is None  # no champion yet
    run_deploy(world, "labelled", "labelled", tmp_path / "serving", NAME)

    same = run_evaluate(world, "labelled")
    assert same.blessed and "serving signature compatible with champion v1" in same.reasons
    assert evaluate_tags(world)[evaluate.SIGNATURE_TAG] == "true"

    changed = run_evaluate(world, "relabelled")
    assert changed.metrics["accuracy"] > 0.9  # thresholds and the champion's metrics pass
    assert not changed.blessed
    change = f"class labels changed from {names} to {names[::-1]}"
    assert changed.signature_changes == [change]
    assert any("INCOMPATIBLE with champion v1" in r and change in r for r in changed.reasons)
    report = (world["root"] / f"eval-relabelled-{NAME}" / "report.md").read_text()
    assert "NOT BLESSED" in report and change in report
    assert evaluate_tags(world)[evaluate.SIGNATURE_TAG] == "false"

    declared = run_evaluate(world, "relabelled", allow=True)
    assert declared.blessed
    assert any("declared (allow_signature_change)" in r for r in declared.reasons)


def test_a_signature_the_champion_serves_must_stay(world, tmp_path):
    """`model.export` serves `serve` and `serving_default`; the labelled export replaces `serve`
    with `classify`: a client of `serve` would break, so the gate names the signature."""
    name = "gate-signature-removed"
    assert gate.run_evaluate(world, "good", name).blessed
    run_deploy(world, "good", "good", tmp_path / "serving", name)
    labelled(world, "labelled", list(artifacts.load_meta(world["splits"])[C.META_CLASS_NAMES]))
    result = gate.run_evaluate(world, "labelled", name)
    assert not result.blessed and result.signature_changes == ["signature 'serve' removed"]
