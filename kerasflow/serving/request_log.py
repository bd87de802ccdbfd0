"""The request log's file format: what `kerasflow serve` records and drift and canary read.

A log is a folder or object-store prefix (anything `kerasflow.runtime.fileio` opens) with one
subfolder per served model. Each finished file is `<prefix>/<model>/requests-<UTC time>-<pid>-
<seq>.jsonl`: one JSON object per line, one line per sampled request,

    {"time": "2026-11-30T08:00:00.123456Z", "model": "digits", "version": 3,
     "signature": "serving_default", "method": "predict",
     "inputs": {"image": [[...]]}, "outputs": {"output_0": [[...]]}}

where `inputs` and `outputs` hold the request's tensors (batch first) as nested lists. A file
being written ends in `.jsonl.part` and is renamed when it is closed, so a reader only ever sees
whole files.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from kerasflow.runtime import fileio

SUFFIX = ".jsonl"
PART_SUFFIX = ".jsonl.part"
PREFIX = "requests-"


def model_folder(log_uri: str, model_name: str) -> str:
    """Where the request log of one model lives."""
    return fileio.join(log_uri, model_name)


def file_name(when: datetime, pid: int, seq: int) -> str:
    """The name of a finished log file; names sort by time."""
    return f"{PREFIX}{when.astimezone(UTC):%Y%m%dT%H%M%S%fZ}-{pid}-{seq:06d}{SUFFIX}"


def encode_record(
    *,
    model: str,
    version: int,
    signature: str,
    method: str,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    when: datetime | None = None,
) -> str:
    """One log line (with its newline) for a request and its answer."""
    when = when or datetime.now(UTC)
    record = {
        "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "model": model,
        "version": int(version),
        "signature": signature,
        "method": method,
        "inputs": inputs,
        "outputs": outputs,
    }
    # orjson writes numeric arrays directly (float32 as its shortest repr), several times faster
    # than json over tolist(); what it cannot write (strings, non-contiguous arrays) is listed.
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE
    return orjson.dumps(record, option=options, default=_listed).decode()


def _listed(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SOU":
            texts = [_text(v) for v in value.reshape(-1).tolist()]
            if not value.ndim:
                return texts[0]
            return np.array(texts, dtype=object).reshape(value.shape).tolist()
        return np.ascontiguousarray(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot log a {type(value).__name__}")


def _text(value: Any) -> Any:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def log_files(log_uri: str, model_name: str) -> list[str]:
    """The finished log files of a model, oldest first (none when the folder does not exist)."""
    folder = model_folder(log_uri, model_name)
    if not fileio.exists(folder):
        return []
    names = [
        name
        for name in fileio.list_dir_names(folder)
        if name.startswith(PREFIX) and name.endswith(SUFFIX)
    ]
    return [fileio.join(folder, name) for name in sorted(names)]


def iter_records(log_uri: str, model_name: str, limit: int | None = None) -> Iterator[dict]:
    """The logged requests of a model, oldest first; a line that is not JSON is skipped."""
    count = 0
    for path in log_files(log_uri, model_name):
        for line in fileio.read_bytes(path).decode("utf-8", "replace").splitlines():
            if limit is not None and count >= limit:
                return
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("inputs"), dict):
                count += 1
                yield record


def stack_inputs(records: list[dict]) -> dict[str, np.ndarray]:
    """The logged requests' inputs concatenated along the batch axis, one array per input."""
    names = sorted({name for record in records for name in record["inputs"]})
    stacked: dict[str, np.ndarray] = {}
    for name in names:
        parts = [np.asarray(r["inputs"][name]) for r in records if name in r["inputs"]]
        stacked[name] = np.concatenate([p if p.ndim else p.reshape(1) for p in parts], axis=0)
    return stacked
