"""The tf.data pipelines the search and the final fit train on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerasflow.data import artifacts
from kerasflow.modeling import builders

pytestmark = pytest.mark.unit


def _table(n: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rows = np.arange(n)
    x = {
        "num": rows.astype("float32").reshape(-1, 1),
        "cat": np.array([f"r{i}" for i in rows], dtype=object).reshape(-1, 1),
    }
    return x, rows.astype("int64")


def _epoch(ds) -> tuple[list[int], np.ndarray, np.ndarray]:
    sizes, nums, cats = [], [], []
    for x, y in ds:
        sizes.append(len(y))
        nums.append(x["num"].numpy().ravel())
        cats.append([c.decode() for c in x["cat"].numpy().ravel()])
        assert (x["num"].numpy().ravel().astype("int64") == y.numpy()).all()
    return sizes, np.concatenate(nums).astype("int64"), np.concatenate(cats)


def test_an_unshuffled_pipeline_keeps_the_row_order_in_full_batches_and_a_short_last_one():
    x, y = _table(23)
    ds = builders.make_dataset(x, y, 5)
    assert int(ds.cardinality()) == 5
    sizes, nums, cats = _epoch(ds)
    assert sizes == [5, 5, 5, 5, 3]
    assert nums.tolist() == list(range(23))
    assert cats.tolist() == [f"r{i}" for i in range(23)]


def test_a_shuffled_pipeline_visits_every_row_once_per_epoch_in_a_new_seeded_order():
    x, y = _table(50)
    ds = builders.make_dataset(x, y, 8, shuffle=True, seed=3)
    assert int(ds.cardinality()) == 7
    epochs = [_epoch(ds) for _ in range(3)]
    for sizes, nums, cats in epochs:
        assert sizes == [8] * 6 + [2]
        assert sorted(nums.tolist()) == list(range(50))
        # Features and labels of a row stay together through the gather.
        assert cats.tolist() == [f"r{i}" for i in nums]
    orders = [tuple(nums) for _, nums, _ in epochs]
    assert len(set(orders)) == 3
    assert tuple(range(50)) not in orders
    # The same seed gives the same sequence of epochs; another seed does not.
    again = builders.make_dataset(x, y, 8, shuffle=True, seed=3)
    assert [tuple(_epoch(again)[1]) for _ in range(3)] == orders
    other = builders.make_dataset(x, y, 8, shuffle=True, seed=4)
    assert tuple(_epoch(other)[1]) != orders[0]


def test_image_arrays_are_gathered_whole():
    x = np.arange(6 * 2 * 2 * 1, dtype="float32").reshape(6, 2, 2, 1)
    y = np.arange(6)
    batches = list(builders.make_dataset({"image": x}, y, 4, shuffle=True, seed=0))
    assert [b[0]["image"].shape[1:] for b in batches] == [(2, 2, 1)] * 2
    for inputs, labels in batches:
        np.testing.assert_array_equal(inputs["image"].numpy(), x[labels.numpy()])


@pytest.mark.parametrize(
    "column",
    [
        pd.Series(["a", "b", None, "a", "é"], dtype=object),
        pd.Series(["a", "b", None, "a"], dtype="str"),
        pd.Series([3, 1, 3]),
        pd.Series([1.5, np.nan, 1.5]),
        pd.Series([True, False, True]),
        pd.Series(pd.Categorical(["x", "y", None, "x"])),
    ],
    ids=["object", "str", "int", "float", "bool", "category"],
)
def test_text_inputs_are_the_columns_strings_with_one_object_per_distinct_value(column):
    text = artifacts.as_text(column)
    expected = column.astype(str).to_numpy(dtype=object)
    assert text.dtype == object and len(text) == len(expected)
    for got, want in zip(text, expected, strict=True):
        assert type(got) is type(want)
        assert got == want or (got != got and want != want)
    assert len({id(v) for v in text}) == len(set(map(str, expected)))


def test_rows_hold_text_columns_as_codes_and_give_back_their_strings():
    import tensorflow as tf

    text = np.array(["b", "a", "b", "ü", "a"], dtype=object).reshape(-1, 1)
    rows = builders.Rows({"t": text, "n": np.arange(5, dtype="float32").reshape(-1, 1)}, np.ones(5))
    inputs, targets = rows._columns
    assert inputs["t"].values.dtype == tf.int32 and inputs["t"].vocabulary.shape == (3,)
    assert inputs["n"].vocabulary is None
    x, y = rows.take(tf.constant([3, 0, 2]))
    assert [v.decode() for v in x["t"].numpy().ravel()] == ["ü", "b", "b"]
    assert x["t"].shape == (3, 1) and x["n"].numpy().ravel().tolist() == [3.0, 0.0, 2.0]
    assert y.numpy().tolist() == [1.0, 1.0, 1.0]


def test_a_feed_makes_its_tensors_once_for_every_batch_size_and_joins_them_for_a_refit():
    from kerasflow.data.feeds import DataFeed, TrainingArrays

    x, y = _table(30)
    arrays = TrainingArrays(
        meta={"task": "classification"},
        train_x={k: v[:21] for k, v in x.items()},
        train_y=y[:21],
        val_x={k: v[21:] for k, v in x.items()},
        val_y=y[21:],
        originals=21,
    )
    feed = DataFeed(arrays, seed=2)
    train, val = feed.datasets(4)
    rows = feed.rows()
    train8, _ = feed.datasets(8)
    assert feed.rows() is rows and [r.count for r in rows] == [21, 9]
    _, train_rows, _ = _epoch(train)
    assert sorted(train_rows.tolist()) == list(range(21))
    assert sorted(_epoch(train8)[1].tolist()) == list(range(21))
    sizes, val_rows, val_cats = _epoch(val)
    assert sizes == [4, 4, 1]
    assert val_rows.tolist() == list(range(21, 30))
    assert val_cats.tolist() == [f"r{i}" for i in range(21, 30)]
    # The refit's pipeline: train and val together, in the order one over both arrays has.
    _, merged_rows, merged_cats = _epoch(feed.merged(5, seed=2))
    assert sorted(merged_rows.tolist()) == list(range(30))
    assert merged_cats.tolist() == [f"r{i}" for i in merged_rows]
    both = builders.make_dataset(x, y, 5, shuffle=True, seed=2)
    assert _epoch(both)[1].tolist() == merged_rows.tolist()
