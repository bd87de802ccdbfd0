"""A table read a Parquet row group at a time: every row once an epoch, the same rows and
targets as in memory, a seeded order that changes each epoch, and the in-memory feed wherever
the rows must be held."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kerasflow.data import artifacts
from kerasflow.data.feeds import DataFeed, StreamFeed, load_training_arrays, open_feed
from kerasflow.runtime.errors import UserError

pytestmark = pytest.mark.unit

GROUP = 7
"""Rows per row group here, so that a small table has several."""


def make_bundle(path: Path, rows: int = 60, shift: float = 0.0, folds: bool = False) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "size": (np.arange(rows) + shift).astype("float32"),
            "color": rng.choice(["red", "green", "blue"], rows),
            "y": np.arange(rows) % 3,
        }
    )
    meta = {
        "modality": "tabular",
        "task": "classification",
        "label": "y",
        "class_names": ["a", "b", "c"],
        "features": [
            {"name": "size", "input": "size", "kind": "numeric"},
            {"name": "color", "input": "color", "kind": "categorical"},
        ],
        "split_sizes": {"train": 45, "val": rows - 45},
        **({"folds": {"k": 3, "ids": [0, 1, 2] * (rows // 3)}} if folds else {}),
    }
    parts = {
        "train": artifacts.Part(frame=frame.iloc[:45].reset_index(drop=True)),
        "val": artifacts.Part(frame=frame.iloc[45:].reset_index(drop=True)),
    }
    artifacts.save(path, artifacts.Bundle(meta, parts))
    return path


@pytest.fixture
def bundle(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(artifacts, "ROW_GROUP_ROWS", GROUP)
    return make_bundle(tmp_path / "bundle")


def _epoch(ds) -> tuple[list[float], list[bytes], list[int], list[int]]:
    sizes, colors, ys, batches = [], [], [], []
    for x, y in ds:
        sizes += x["size"].numpy().ravel().tolist()
        colors += x["color"].numpy().ravel().tolist()
        ys += y.numpy().tolist()
        batches.append(len(y))
    return sizes, colors, ys, batches


def test_each_epoch_streams_every_train_row_once_with_its_own_inputs_and_target(bundle):
    feed = open_feed(str(bundle), str(bundle), seed=3, stream_rows=10)
    assert isinstance(feed, StreamFeed) and feed.streamed and feed.rows == (45, 15)
    memory = load_training_arrays(str(bundle), str(bundle))
    by_size = {
        float(s): (c, int(y))
        for s, c, y in zip(
            memory.train_x["size"].ravel(),
            memory.train_x["color"].ravel(),
            memory.train_y,
            strict=True,
        )
    }
    train, val = feed.datasets(4)
    assert int(train.cardinality()) == sum(-(-n // 4) for n in (7,) * 6 + (3,))
    orders = []
    for _ in range(2):
        sizes, colors, ys, batches = _epoch(train)
        assert sorted(sizes) == sorted(by_size) and len(batches) == int(train.cardinality())
        assert all(by_size[s] == (c.decode(), y) for s, c, y in zip(sizes, colors, ys, strict=True))
        orders.append(sizes)
    assert orders[0] != orders[1]  # a new order each epoch
    again = open_feed(str(bundle), str(bundle), seed=3, stream_rows=10).datasets(4)[0]
    assert [_epoch(again)[0] for _ in range(2)] == orders  # the same seed, the same orders
    # The val split is read in order, batch by batch.
    sizes, _, ys, _ = _epoch(val)
    assert sizes == memory.val_x["size"].ravel().tolist() and ys == memory.val_y.tolist()


def test_the_merged_pipeline_holds_train_and_val_and_samples_are_the_first_rows(bundle):
    feed = open_feed(str(bundle), str(bundle), seed=0, stream_rows=10)
    sizes = _epoch(feed.merged(5, seed=1))[0]
    assert sorted(sizes) == list(range(60))
    train_x, val_x = feed.samples()
    assert train_x["size"].ravel().tolist() == list(range(GROUP))
    assert val_x["size"].ravel().tolist() == list(range(45, 45 + GROUP))
    with pytest.raises(UserError, match="k-fold"):
        feed.folds(3, 4)


def test_the_hash_names_the_data(bundle, tmp_path):
    feed = open_feed(str(bundle), str(bundle), seed=0, stream_rows=10)
    assert feed.content_hash() == open_feed(str(bundle), str(bundle), 1, 10).content_hash()
    other = make_bundle(tmp_path / "other", shift=0.5)
    assert open_feed(str(other), str(other), 0, 10).content_hash() != feed.content_hash()


def test_rows_stay_in_memory_when_few_or_when_held_rows_are_needed(bundle, tmp_path):
    assert isinstance(open_feed(str(bundle), str(bundle), 0, stream_rows=45), DataFeed)
    assert isinstance(open_feed(str(bundle), str(bundle), 0, stream_rows=0), DataFeed)
    assert isinstance(open_feed(str(bundle), str(bundle), 0, 10, in_memory=True), DataFeed)
    folded = make_bundle(tmp_path / "folded", folds=True)
    assert isinstance(open_feed(str(folded), str(folded), 0, stream_rows=10), DataFeed)
