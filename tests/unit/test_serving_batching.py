"""Batcher: merging, splitting, limits and failure isolation, with a fake model function."""

from __future__ import annotations

import concurrent.futures
import threading

import numpy as np
import pytest

from kerasflow.serving.batching import Batcher, BatchingOptions, DirectRunner

pytestmark = pytest.mark.unit


class GatedModel:
    """Doubles `x`; the first call blocks until released, so later requests queue up."""

    def __init__(self, gated: bool = True):
        self.calls: list[int] = []
        self.gated = gated
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs):
        self.calls.append(len(inputs["x"]))
        if self.gated and len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(10)
        if (inputs["x"] < 0).any():
            raise ValueError("negative input")
        return {"y": inputs["x"] * 2, "z": inputs["x"].sum(axis=tuple(range(1, inputs["x"].ndim)))}


def rows(n: int, start: float, width: int = 2) -> dict[str, np.ndarray]:
    return {"x": np.arange(start, start + n * width, dtype=np.float32).reshape(n, width)}


def start_blocked(model: GatedModel, batcher: Batcher) -> concurrent.futures.Future:
    first = batcher.submit(rows(1, 1000.0), 1)
    assert model.started.wait(10)
    return first


def test_queued_requests_of_mixed_sizes_run_as_one_call_and_get_their_own_rows():
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=8))
    try:
        first = start_blocked(model, batcher)
        requests = [rows(2, 0.0), rows(1, 10.0), rows(3, 20.0)]
        futures = [batcher.submit(r, len(r["x"])) for r in requests]
        model.release.set()
        for request, future in zip(requests, futures, strict=True):
            result = future.result(10)
            np.testing.assert_array_equal(result["y"], request["x"] * 2)
            np.testing.assert_array_equal(result["z"], request["x"].sum(axis=1))
        np.testing.assert_array_equal(first.result(10)["y"], rows(1, 1000.0)["x"] * 2)
        assert model.calls == [1, 6]
        assert batcher.stats.max_requests_in_batch == 3
    finally:
        batcher.close()


def test_a_batch_never_exceeds_max_batch_size_rows():
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=4))
    try:
        start_blocked(model, batcher)
        futures = [batcher.submit(rows(n, 10.0 * i), n) for i, n in enumerate([2, 2, 1, 3])]
        model.release.set()
        for future in futures:
            future.result(10)
        # FIFO, filling each batch up to 4 rows: [2, 2] then [1, 3].
        assert model.calls == [1, 4, 4]
    finally:
        batcher.close()


def test_a_request_larger_than_the_batch_runs_alone_and_whole():
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=2))
    try:
        start_blocked(model, batcher)
        big = rows(5, 0.0)
        future = batcher.submit(big, 5)
        model.release.set()
        np.testing.assert_array_equal(future.result(10)["y"], big["x"] * 2)
        assert model.calls == [1, 5]
    finally:
        batcher.close()


def test_requests_with_different_trailing_shapes_are_not_concatenated():
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=16))
    try:
        start_blocked(model, batcher)
        narrow, wide = rows(2, 0.0, width=2), rows(2, 0.0, width=3)
        futures = [batcher.submit(narrow, 2), batcher.submit(wide, 2)]
        model.release.set()
        np.testing.assert_array_equal(futures[0].result(10)["y"], narrow["x"] * 2)
        np.testing.assert_array_equal(futures[1].result(10)["y"], wide["x"] * 2)
        assert model.calls == [1, 2, 2]
    finally:
        batcher.close()


def test_one_failing_request_does_not_fail_the_requests_batched_with_it():
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=16))
    try:
        start_blocked(model, batcher)
        good, bad = rows(2, 0.0), rows(1, -5.0)
        futures = [batcher.submit(good, 2), batcher.submit(bad, 1)]
        model.release.set()
        np.testing.assert_array_equal(futures[0].result(10)["y"], good["x"] * 2)
        with pytest.raises(ValueError, match="negative input"):
            futures[1].result(10)
    finally:
        batcher.close()


def test_a_positive_timeout_holds_a_batch_until_it_is_full():
    model = GatedModel(gated=False)
    batcher = Batcher(model, BatchingOptions(max_batch_size=3, batch_timeout_micros=30_000_000))
    try:
        futures = [batcher.submit(rows(1, float(i)), 1) for i in range(3)]
        for i, future in enumerate(futures):
            np.testing.assert_array_equal(future.result(10)["y"], rows(1, float(i))["x"] * 2)
        assert model.calls == [3]
    finally:
        batcher.close()


def test_close_runs_what_is_queued_and_later_requests_still_get_answers():
    model = GatedModel(gated=False)
    batcher = Batcher(model, BatchingOptions(max_batch_size=8, batch_timeout_micros=30_000_000))
    queued = batcher.submit(rows(1, 1.0), 1)
    batcher.close()
    np.testing.assert_array_equal(queued.result(10)["y"], rows(1, 1.0)["x"] * 2)
    late = batcher.submit(rows(2, 3.0), 2)
    np.testing.assert_array_equal(late.result(10)["y"], rows(2, 3.0)["x"] * 2)


def test_direct_runner_runs_each_request_in_the_pool():
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runner = DirectRunner(lambda inputs: {"y": inputs["x"] + 1}, pool)
        futures = [runner.submit(rows(n, 0.0), n) for n in (1, 3)]
        assert [len(f.result(10)["y"]) for f in futures] == [1, 3]
