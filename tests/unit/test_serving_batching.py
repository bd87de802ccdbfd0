"""Batcher and AsyncBatcher: merging, splitting, limits and failure isolation, on a fake model."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time

import numpy as np
import pytest

from kerasflow.serving import batching
from kerasflow.serving.batching import (
    AsyncBatcher,
    AsyncDirectRunner,
    Batcher,
    BatchingOptions,
    DirectRunner,
)

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


@pytest.fixture
def pool():
    with concurrent.futures.ThreadPoolExecutor(16) as executor:
        yield executor


def queue_behind_a_running_batch(model, batcher, pool, requests):
    """Starts one request that blocks in the model, then queues `requests` behind it."""
    first = pool.submit(batcher.run, rows(1, 1000.0), 1)
    assert model.started.wait(10)
    futures = []
    for request in requests:
        futures.append(pool.submit(batcher.run, request, len(request["x"])))
        deadline = time.monotonic() + 10
        while batcher.queued_requests < len(futures):
            assert time.monotonic() < deadline, "request did not queue"
            time.sleep(0.001)
    model.release.set()
    return first, futures


def test_queued_requests_of_mixed_sizes_run_as_one_call_and_get_their_own_rows(pool):
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=8))
    requests = [rows(2, 0.0), rows(1, 10.0), rows(3, 20.0)]
    first, futures = queue_behind_a_running_batch(model, batcher, pool, requests)
    for request, future in zip(requests, futures, strict=True):
        result = future.result(10)
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
        np.testing.assert_array_equal(result["z"], request["x"].sum(axis=1))
    np.testing.assert_array_equal(first.result(10)["y"], rows(1, 1000.0)["x"] * 2)
    assert model.calls == [1, 6]
    assert batcher.stats.max_requests_in_batch == 3
    assert batcher.queued_requests == 0


def test_a_batch_never_exceeds_max_batch_size_rows(pool):
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=4))
    requests = [rows(n, 10.0 * i) for i, n in enumerate([2, 2, 1, 3])]
    _, futures = queue_behind_a_running_batch(model, batcher, pool, requests)
    for request, future in zip(requests, futures, strict=True):
        np.testing.assert_array_equal(future.result(10)["y"], request["x"] * 2)
    # FIFO, filling each batch up to 4 rows: [2, 2] then [1, 3].
    assert model.calls == [1, 4, 4]


def test_a_request_larger_than_the_batch_runs_alone_and_whole(pool):
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=2))
    big = rows(5, 0.0)
    _, (future,) = queue_behind_a_running_batch(model, batcher, pool, [big])
    np.testing.assert_array_equal(future.result(10)["y"], big["x"] * 2)
    assert model.calls == [1, 5]


def test_requests_with_different_trailing_shapes_are_not_concatenated(pool):
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=16))
    narrow, wide = rows(2, 0.0, width=2), rows(2, 0.0, width=3)
    _, futures = queue_behind_a_running_batch(model, batcher, pool, [narrow, wide])
    np.testing.assert_array_equal(futures[0].result(10)["y"], narrow["x"] * 2)
    np.testing.assert_array_equal(futures[1].result(10)["y"], wide["x"] * 2)
    assert model.calls == [1, 2, 2]


def test_one_failing_request_does_not_fail_the_requests_batched_with_it(pool):
    model = GatedModel()
    batcher = Batcher(model, BatchingOptions(max_batch_size=16))
    good, bad = rows(2, 0.0), rows(1, -5.0)
    _, futures = queue_behind_a_running_batch(model, batcher, pool, [good, bad])
    np.testing.assert_array_equal(futures[0].result(10)["y"], good["x"] * 2)
    with pytest.raises(ValueError, match="negative input"):
        futures[1].result(10)
    # The batcher keeps working after a failure.
    np.testing.assert_array_equal(batcher.run(good, 2)["y"], good["x"] * 2)


def test_a_positive_timeout_holds_a_batch_until_it_is_full(pool):
    model = GatedModel(gated=False)
    batcher = Batcher(model, BatchingOptions(max_batch_size=3, batch_timeout_micros=30_000_000))
    futures = [pool.submit(batcher.run, rows(1, float(i)), 1) for i in range(3)]
    for i, future in enumerate(futures):
        np.testing.assert_array_equal(future.result(20)["y"], rows(1, float(i))["x"] * 2)
    assert model.calls == [3]


def test_a_lone_request_runs_on_the_callers_thread():
    seen = []
    batcher = Batcher(
        lambda inputs: seen.append(threading.get_ident()) or {"y": inputs["x"]},
        BatchingOptions(max_batch_size=8),
    )
    batcher.run(rows(1, 0.0), 1)
    assert seen == [threading.get_ident()]


def test_many_concurrent_requests_all_get_their_own_answers(pool):
    batcher = Batcher(lambda inputs: {"y": inputs["x"] * 3}, BatchingOptions(max_batch_size=8))
    requests = [rows(1 + i % 4, float(i * 100)) for i in range(200)]
    futures = [pool.submit(batcher.run, r, len(r["x"])) for r in requests]
    for request, future in zip(requests, futures, strict=True):
        np.testing.assert_array_equal(future.result(20)["y"], request["x"] * 3)
    assert batcher.stats.requests == 200
    assert batcher.queued_requests == 0


def test_direct_runner_runs_each_request_alone():
    runner = DirectRunner(lambda inputs: {"y": inputs["x"] + 1})
    assert [len(runner.run(rows(n, 0.0), n)["y"]) for n in (1, 3)] == [1, 3]


async def queue_on_the_loop(model, batcher, requests):
    """Starts one request that blocks in the model, queues `requests` behind it, releases it."""
    first = asyncio.ensure_future(batcher.run(rows(1, 1000.0), 1))
    assert await asyncio.to_thread(model.started.wait, 10)
    tasks = [asyncio.ensure_future(batcher.run(r, len(r["x"]))) for r in requests]
    await asyncio.sleep(0)
    assert batcher.queued_requests == len(requests)
    model.release.set()
    return await first, await asyncio.gather(*tasks, return_exceptions=True)


def test_coroutines_queued_behind_a_running_batch_run_as_one_call(pool):
    model = GatedModel()
    batcher = AsyncBatcher(model, BatchingOptions(max_batch_size=8), pool)
    requests = [rows(2, 0.0), rows(1, 10.0), rows(3, 20.0)]
    first, results = asyncio.run(queue_on_the_loop(model, batcher, requests))
    np.testing.assert_array_equal(first["y"], rows(1, 1000.0)["x"] * 2)
    for request, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], request["x"] * 2)
        np.testing.assert_array_equal(result["z"], request["x"].sum(axis=1))
    assert model.calls == [1, 6]
    assert (batcher.stats.batches, batcher.stats.max_requests_in_batch) == (2, 3)


def test_a_failing_coroutine_request_does_not_fail_its_batch(pool):
    model = GatedModel()
    batcher = AsyncBatcher(model, BatchingOptions(max_batch_size=16), pool)
    good, bad = rows(2, 0.0), rows(1, -5.0)
    _, (ok, failed) = asyncio.run(queue_on_the_loop(model, batcher, [good, bad]))
    np.testing.assert_array_equal(ok["y"], good["x"] * 2)
    assert isinstance(failed, ValueError) and "negative input" in str(failed)


def test_coroutines_wait_for_a_full_batch_under_a_timeout(pool):
    model = GatedModel(gated=False)
    batcher = AsyncBatcher(
        model, BatchingOptions(max_batch_size=3, batch_timeout_micros=30_000_000), pool
    )

    async def three():
        return await asyncio.gather(*(batcher.run(rows(1, float(i)), 1) for i in range(3)))

    for i, result in enumerate(asyncio.run(three())):
        np.testing.assert_array_equal(result["y"], rows(1, float(i))["x"] * 2)
    assert model.calls == [3]


@pytest.mark.parametrize("quick", [True, False])
def test_quick_lone_requests_run_on_the_loop_and_others_on_a_worker(pool, monkeypatch, quick):
    # Every call counts as quick, or none does, whatever this machine's speed.
    monkeypatch.setattr(batching, "INLINE_SECONDS", 3600.0 if quick else 0.0)
    seen = []
    batcher = AsyncBatcher(
        lambda inputs: seen.append(threading.get_ident()) or {"y": inputs["x"]},
        BatchingOptions(max_batch_size=8),
        pool,
    )

    async def lone_then_lone_then_pair():
        await batcher.run(rows(1, 0.0), 1)
        await batcher.run(rows(1, 0.0), 1)
        await asyncio.gather(batcher.run(rows(1, 0.0), 1), batcher.run(rows(1, 0.0), 1))
        return threading.get_ident()

    loop_thread = asyncio.run(lone_then_lone_then_pair())
    assert len(seen) == 3
    # The first lone request goes to a worker; the next one, with the server quiet, stays on
    # the loop when the model is quick; a pair is one merged call on a worker again.
    assert seen[0] != loop_thread and seen[2] != loop_thread
    assert (seen[1] == loop_thread) is quick


@pytest.mark.parametrize("quick", [True, False])
def test_quick_unbatched_requests_run_on_the_loop_with_a_worker_now_and_then(
    pool, monkeypatch, quick
):
    monkeypatch.setattr(batching, "INLINE_SECONDS", 3600.0 if quick else 0.0)
    seen = []
    runner = AsyncDirectRunner(lambda inputs: seen.append(threading.get_ident()) or inputs)

    async def one_by_one():
        for i in range(batching.PROBE_EVERY + 2):
            result = await runner.run({"x": np.array([i])}, pool)
            assert result["x"][0] == i
        return threading.get_ident()

    loop_thread = asyncio.run(one_by_one())
    on_loop = [thread == loop_thread for thread in seen]
    # The first call goes to a worker; with a quick model the next ones stay on the loop, but
    # for every PROBE_EVERY-th of them, which goes to a worker to see whether others arrive.
    expected = [False] + [quick and i % batching.PROBE_EVERY != 0 for i in range(1, len(seen))]
    assert on_loop == expected


def test_overlapping_unbatched_requests_keep_running_on_workers(pool, monkeypatch):
    monkeypatch.setattr(batching, "INLINE_SECONDS", 3600.0)
    seen = []
    runner = AsyncDirectRunner(lambda inputs: seen.append(threading.get_ident()) or inputs)

    async def pairs():
        for i in range(3):
            await asyncio.gather(runner.run(rows(1, i), pool), runner.run(rows(1, -i), pool))
        return threading.get_ident()

    loop_thread = asyncio.run(pairs())
    assert len(seen) == 6 and loop_thread not in seen


def test_an_unbatched_coroutine_request_gets_its_error(pool):
    runner = AsyncDirectRunner(GatedModel(gated=False))
    with pytest.raises(ValueError, match="negative input"):
        asyncio.run(runner.run(rows(1, -5.0), pool))
