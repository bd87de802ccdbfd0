"""How `kerasflow predict` shows a model's answers: a table, or JSON with `--json`."""

from __future__ import annotations

import io
from typing import Any

from kerasflow import constants as C


def classified_rows(predictions: list, names: list[str]) -> list[dict[str, Any]]:
    """Rows of the `classify` signature's answers: input, class and each class's probability."""
    rows = []
    for name, answer in zip(names, predictions, strict=True):
        classes = answer["class_names"]
        scores = [float(s) for s in answer["scores"]]
        rows.append(
            {
                "input": name,
                "class": answer["classes"],
                "probabilities": dict(zip(classes, scores, strict=True)),
            }
        )
    return rows


def _value(answer: Any) -> Any:
    if isinstance(answer, list) and len(answer) == 1 and not isinstance(answer[0], list):
        return answer[0]  # a regression model's one value per row
    return answer


def render_table(predictions: list, names: list[str], classified: bool, top: int = 3) -> str:
    """A table with a row per input: its class and probability (and the next likeliest
    classes), or the model's value(s)."""
    from rich.console import Console
    from rich.table import Table, box

    table = Table(box=box.SIMPLE, show_edge=False)
    table.add_column("input", overflow="fold")
    if classified:
        table.add_column("class")
        table.add_column("probability", justify="right")
        table.add_column("next likeliest")
        for row in classified_rows(predictions, names):
            ranked = sorted(row["probabilities"].items(), key=lambda kv: -kv[1])
            others = ", ".join(f"{c} {p:.3f}" for c, p in ranked[1:top])
            table.add_row(row["input"], row["class"], f"{ranked[0][1]:.4f}", others)
    else:
        table.add_column("prediction")
        for name, answer in zip(names, predictions, strict=True):
            value = _value(answer)
            text = f"{value:.6g}" if isinstance(value, float) else str(value)
            table.add_row(name, text)
    out = io.StringIO()
    Console(file=out, width=120, highlight=False, color_system=None).print(table)
    return out.getvalue()


def json_document(predictions: list, names: list[str], classified: bool) -> dict[str, Any]:
    """The `--json` document: classified rows, or the raw predictions with the input names."""
    if classified:
        return {"predictions": classified_rows(predictions, names)}
    return {"predictions": predictions, "inputs": names}


def is_classify(signature: str) -> bool:
    """Whether answers come from the `classify` signature (class names and scores)."""
    return signature == C.CLASSIFY_SIGNATURE
