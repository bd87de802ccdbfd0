"""The data a drift check compares with the reference: a data URI, or a model's request log."""

from __future__ import annotations

from typing import Any

import numpy as np

from kerasflow.monitoring.drift import Current
from kerasflow.runtime.errors import UserError

DEFAULT_MAX_REQUESTS = 100_000


def from_data(uri: str, reference: dict) -> Current:
    """New data read as the ingest step reads them; the label is tested when present.

    Raises:
        UserError: when the data cannot be read.
    """
    from kerasflow.data import cleaning
    from kerasflow.data.sources import read_source

    label = reference["label"]["name"]
    images = reference.get("images")
    size = tuple(images["shape"][:2]) if images else None
    modality = reference.get("modality", "")
    text = [n for n, e in reference.get("features", {}).items() if e["kind"] == "text"]
    raw = read_source(
        uri,
        label if modality != "image" else "",
        modality=modality,
        text_column=text[0] if text else "",
        image_size=size,
    )
    if raw.x is not None:
        labels = _class_indices(raw.y, raw.class_names, reference["label"])
        return Current(images=raw.x, labels=labels, rows=len(raw.x), source=uri)
    frame = cleaning.coerce_types(raw.frame, cleaning.CleaningReport(rows_in=len(raw.frame)))
    columns = {str(c): frame[c].to_numpy() for c in frame.columns if c != label}
    labels = frame[label].to_numpy() if label in frame.columns else None
    if labels is not None and reference["label"]["task"] == "classification":
        labels = np.asarray([_class_name(v) for v in labels], dtype=object)
    return Current(columns=columns, labels=labels, rows=len(frame), source=uri)


def _class_name(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return None if value is None else str(value)


def _class_indices(y: Any, names: list[str], label: dict) -> np.ndarray | None:
    """Labels of images as class names (the reference counts classes by name)."""
    if y is None or label.get("task") != "classification":
        return None
    y = np.asarray(y)
    if names and y.dtype.kind in "iu":
        return np.asarray([names[i] for i in y], dtype=object)
    return np.asarray([str(v) for v in y], dtype=object)


def from_requests(
    log_uri: str, model_name: str, reference: dict, limit: int = DEFAULT_MAX_REQUESTS
) -> Current:
    """The inputs of the requests `kerasflow serve` logged for `model_name`.

    Raises:
        UserError: when the log holds no request of the model, or inputs of another model.
    """
    from kerasflow.serving import request_log

    records = list(request_log.iter_records(log_uri, model_name, limit=limit))
    where = request_log.model_folder(log_uri, model_name)
    if not records:
        raise UserError(f"no logged requests of '{model_name}' under {where}")
    try:
        inputs = request_log.stack_inputs(records)
    except ValueError as exc:
        raise UserError(f"the logged requests under {where} do not stack: {exc}") from None
    source = f"{len(records)} logged requests under {where}"
    images = reference.get("images")
    if images is not None:
        x = inputs.get(images["input"])
        if x is None:
            raise UserError(f"the logged requests under {where} have no '{images['input']}' input")
        x = np.asarray(x, dtype="float64")
        if x.ndim != len(images["shape"]) + 1:
            raise UserError(
                f"the logged '{images['input']}' inputs under {where} have shape {x.shape[1:]}, "
                f"the model's images {tuple(images['shape'])}"
            )
        return Current(images=x, rows=len(x), source=source)
    columns = {}
    for name, entry in reference.get("features", {}).items():
        if entry["input"] in inputs:
            value = inputs[entry["input"]]
            columns[name] = value.reshape(len(value), -1)[:, 0] if value.ndim > 1 else value
    rows = max((len(v) for v in columns.values()), default=0)
    return Current(columns=columns, rows=rows, source=source)
