"""Datasets as MLflow run inputs: what a run read, with its source URI, digest, schema and profile.

The ingest step logs the clean data it produced from the source; the split step logs the train,
val and test parts it wrote. Each input carries kerasflow's own content hash as its digest (the
same hash the lineage tags use), so a user finds what a model was trained on from the run page.
"""

from __future__ import annotations

import warnings
from typing import Any

from kerasflow import constants as C
from kerasflow.data import artifacts


def _source(uri: str) -> Any:
    """An MLflow dataset source for `uri`: a file or object-store source, or a code source for
    URIs MLflow has no resolver for (scikit-learn's bundled sets, `builtin:NAME`)."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.exceptions import MlflowException

    if uri and not uri.startswith("builtin:"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return resolve_dataset_source(uri)
        except MlflowException:
            pass
    return CodeDatasetSource(tags={"uri": uri or "unknown"})


def as_dataset(part: artifacts.Part, meta: dict, name: str, source_uri: str) -> Any:
    """An MLflow Dataset for one part (a table or image arrays) with kerasflow's digest."""
    import mlflow.data

    digest = artifacts.hash_part(part)
    source = _source(source_uri)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if part.frame is not None:
            label = meta.get(C.META_LABEL)
            targets = label if label in part.frame.columns else None
            return mlflow.data.from_pandas(
                part.frame, source=source, targets=targets, name=name, digest=digest
            )
        return mlflow.data.from_numpy(
            part.x, source=source, targets=part.y, name=name, digest=digest
        )


def dataset_name(source_uri: str) -> str:
    """A short name for the data at `source_uri`: the builtin set's name or the last path part."""
    if source_uri.startswith("builtin:"):
        return source_uri[len("builtin:") :]
    stem = source_uri.rstrip("/").rsplit("/", 1)[-1]
    return stem.rsplit(".", 1)[0] if "." in stem else stem or "data"


def log_parts(parts: dict[str, artifacts.Part], meta: dict, source_uri: str) -> None:
    """Logs each part as an input of the active run, its context the part's name."""
    name = dataset_name(source_uri)
    for context, part in parts.items():
        _log_input(as_dataset(part, meta, f"{name}-{context}", source_uri), context)


def _log_input(dataset: Any, context: str) -> None:
    """`mlflow.log_input`, once more when another run inserted the same dataset meanwhile.

    The store looks a dataset (experiment, name, digest) up and inserts it when it is missing;
    two runs of the same data at once can both miss it, and the second insert then breaks the
    unique key and rolls back. The retry finds the dataset and only links it to this run.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    for attempt in (1, 2):
        try:
            # The schema is inferred when the input is logged; its hints about integer columns
            # are advice for model signatures, not for a record of what was read.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlflow.log_input(dataset, context=context)
            return
        except MlflowException as exc:
            if attempt == 2 or not _duplicate_key(exc):
                raise


def _duplicate_key(exc: Exception) -> bool:
    """Whether a store error is a unique key broken by a concurrent insert (SQLite, PostgreSQL,
    MySQL wording)."""
    text = str(exc).lower()
    return any(
        words in text
        for words in ("unique constraint failed", "duplicate key value", "duplicate entry")
    )
