"""The promotion gate's serving-signature check: a candidate must answer the champion's clients."""

from __future__ import annotations

import pytest

from kerasflow import constants as C
from kerasflow.components.evaluate import core as evaluate
from kerasflow.components.evaluate.core import ExportSignature

pytestmark = pytest.mark.unit

INPUTS = {"petal_length": ("float", "[-1,1]"), "petal_width": ("float", "[-1,1]")}
CLASSES = ["setosa", "versicolor", "virginica"]


def export_signature(
    inputs: dict | None = None,
    scores: tuple[str, str] = ("float", "[-1,3]"),
    labels: list[str] | None = None,
    classify: bool = True,
) -> ExportSignature:
    inputs = dict(INPUTS if inputs is None else inputs)
    signatures = {C.SERVING_SIGNATURE: {"inputs": inputs, "outputs": {C.SERVING_OUTPUT: scores}}}
    if classify:
        signatures[C.CLASSIFY_SIGNATURE] = {
            "inputs": inputs,
            "outputs": {
                "scores": scores,
                "classes": ("string", "[-1]"),
                "class_names": ("string", scores[1]),
            },
        }
    return ExportSignature(signatures, list(CLASSES if labels is None else labels))


def judged(changes: list[str], allow: bool = False) -> evaluate.Evaluation:
    result = evaluate.Evaluation({"accuracy": 0.9}, True, [])
    evaluate.check_signature(result, changes, 4, allow_signature_change=allow)
    return result


def test_a_compatible_signature_passes():
    changes = evaluate.signature_changes(export_signature(), export_signature())
    assert changes == []
    result = judged(changes)
    assert result.blessed and result.reasons == ["serving signature compatible with champion v4"]
    assert result.signature_changes == []


@pytest.mark.parametrize(
    ("candidate", "change"),
    [
        (
            export_signature(inputs={"petal_length": ("float", "[-1,1]")}),
            "input 'petal_width' missing",
        ),
        (
            export_signature(inputs={**INPUTS, "sepal_width": ("float", "[-1,1]")}),
            "input 'sepal_width' added",
        ),
        (
            export_signature(inputs={**INPUTS, "petal_width": ("string", "[-1,1]")}),
            "input 'petal_width' dtype changed from float to string",
        ),
        (
            export_signature(inputs={**INPUTS, "petal_width": ("float", "[-1,2]")}),
            "input 'petal_width' shape changed from [-1,1] to [-1,2]",
        ),
        (
            export_signature(scores=("double", "[-1,3]")),
            "output 'output_0' dtype changed from float to double",
        ),
        (
            export_signature(scores=("float", "[-1,4]"), labels=[*CLASSES, "other"]),
            "output 'output_0' shape changed from [-1,3] to [-1,4]",
        ),
        (
            export_signature(labels=["setosa", "virginica", "versicolor"]),
            "class labels changed from ['setosa', 'versicolor', 'virginica'] to "
            "['setosa', 'virginica', 'versicolor']",
        ),
        (export_signature(classify=False), "signature 'classify' removed"),
    ],
    ids=[
        "input-missing",
        "input-added",
        "input-dtype",
        "input-shape",
        "output-dtype",
        "output-shape",
        "class-labels",
        "signature-removed",
    ],
)
def test_each_kind_of_change_blocks_unless_declared(candidate, change):
    changes = evaluate.signature_changes(export_signature(), candidate)
    assert change in changes
    blocked = judged(changes)
    assert not blocked.blessed
    (reason,) = blocked.reasons
    assert reason.startswith("serving signature INCOMPATIBLE with champion v4 (")
    assert change in reason and "allow_signature_change" in reason
    declared = judged(changes, allow=True)
    assert declared.blessed and change in declared.reasons[0]
    assert "declared (allow_signature_change)" in declared.reasons[0]


def test_a_shared_input_change_is_named_once_and_added_signatures_are_compatible():
    candidate = export_signature(inputs={"petal_length": ("float", "[-1,1]")})
    changes = evaluate.signature_changes(export_signature(), candidate)
    assert changes == ["input 'petal_width' missing"]
    bare = export_signature(classify=False)
    assert evaluate.signature_changes(bare, export_signature()) == []


def test_signature_and_class_labels_are_read_from_the_exports(tmp_path):
    """A real `export_saved_model` export: its signatures and the labels `classify` answers."""
    import keras

    from kerasflow.modeling.export import export_saved_model

    meta = {
        "modality": "tabular",
        "task": "classification",
        "class_names": CLASSES,
        "features": [
            {"name": "petal_width", "input": "petal_width", "kind": "numeric"},
            {"name": "species_hint", "input": "species_hint", "kind": "categorical"},
        ],
    }

    def export(names: list[str], where: str) -> ExportSignature:
        width = keras.Input((1,), name="petal_width")
        hint = keras.Input((1,), name="species_hint", dtype="string")
        codes = keras.layers.StringLookup(vocabulary=["a", "b"], output_mode="one_hot")(hint)
        joined = keras.layers.Concatenate()([width, keras.layers.Flatten()(codes)])
        out = keras.layers.Dense(len(names), activation="softmax")(joined)
        model = keras.Model({"petal_width": width, "species_hint": hint}, out)
        export_saved_model(model, tmp_path / where, {**meta, "class_names": names})
        return evaluate.read_export_signature(tmp_path / where)

    champion = export(CLASSES, "champion")
    assert champion.class_labels == CLASSES
    assert set(champion.signatures) == {C.SERVING_SIGNATURE, C.CLASSIFY_SIGNATURE}
    assert champion.signatures[C.SERVING_SIGNATURE]["inputs"] == {
        "petal_width": ("float", "[-1,1]"),
        "species_hint": ("string", "[-1,1]"),
    }
    assert champion.signatures[C.SERVING_SIGNATURE]["outputs"] == {
        C.SERVING_OUTPUT: ("float", "[-1,3]")
    }
    renamed = export(["setosa", "versicolor", "virginica-x"], "renamed")
    assert evaluate.signature_changes(champion, renamed) == [
        "class labels changed from ['setosa', 'versicolor', 'virginica'] to "
        "['setosa', 'versicolor', 'virginica-x']"
    ]
