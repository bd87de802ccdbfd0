"""Server-side batching: concurrent requests to one signature become one model call.

Requests arrive on their own threads (one per REST connection, one per gRPC call) and queue up.
The first thread to find no batch running becomes the leader: it takes every queued request that
fits into `max_batch_size` rows, concatenates them along the 0th dimension, calls the model once,
hands each request its slice of the outputs and passes the lead to the oldest request still
queued. A lone request therefore runs at once on its own thread, with no hop to another thread,
and requests that arrive while the model is busy form the next batch.

With `batch_timeout_micros` > 0 a leader waits (from the oldest request's arrival) for the batch
to fill before calling the model, as in TF Serving's batching parameters.

`AsyncBatcher` merges the same way for coroutines on one event loop (the gRPC front end): the
requests wait as futures on the loop and each merged call runs on a worker thread, so the loop
keeps taking requests while the model runs and a request costs no thread switch of its own.
`AsyncDirectRunner` is its counterpart without batching.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping

import numpy as np

log = logging.getLogger(__name__)

Arrays = Mapping[str, np.ndarray]
ModelFn = Callable[[Arrays], dict[str, np.ndarray]]
# A lone request may run on the event loop itself when the last call was alone and this quick.
INLINE_SECONDS = 0.002
# Of the requests that could run on the event loop, every this many-th runs on a worker thread.
PROBE_EVERY = 8


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """max_batch_size <= 1 turns batching off (every request runs on its own)."""

    max_batch_size: int = 32
    batch_timeout_micros: int = 0

    @property
    def enabled(self) -> bool:
        """True when requests may be merged."""
        return self.max_batch_size > 1


@dataclasses.dataclass
class BatchStats:
    """Counters a test or an operator can read to see batching at work."""

    batches: int = 0
    requests: int = 0
    max_requests_in_batch: int = 0
    max_rows_in_batch: int = 0


class _Request:
    __slots__ = ("inputs", "rows", "key", "enqueued", "result", "error", "done")

    def __init__(self, inputs: Arrays, rows: int):
        self.inputs = inputs
        self.rows = rows
        # Only tensors that agree beyond the 0th dimension can be concatenated.
        self.key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))
        self.enqueued = time.monotonic()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None
        # Set when an AsyncBatcher has run the request.
        self.done: asyncio.Future | None = None

    def outcome(self) -> dict[str, np.ndarray]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Task(_Request):
    """A request whose caller waits on its own thread."""

    __slots__ = ("lead", "_signal")

    def __init__(self, inputs: Arrays, rows: int):
        super().__init__(inputs, rows)
        self.lead = False
        # A held lock is the cheapest one-shot signal: release() wakes the one waiter.
        self._signal = threading.Lock()
        self._signal.acquire()

    def wake(self) -> None:
        self._signal.release()

    def wait(self) -> None:
        self._signal.acquire()


class _Merging:
    """The queue of waiting requests and how a batch is taken from it and run."""

    def __init__(self, fn: ModelFn, options: BatchingOptions):
        self._fn = fn
        self._max_rows = max(1, options.max_batch_size)
        self._timeout = max(0, options.batch_timeout_micros) / 1e6
        self._queue: collections.deque = collections.deque()
        self._queued_rows = 0
        self.stats = BatchStats()

    @property
    def queued_requests(self) -> int:
        """Requests waiting for a batch (not counting one being run)."""
        return len(self._queue)

    def _take(self) -> list:
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        if rows < self._max_rows and self._queue:
            kept: collections.deque = collections.deque()
            for task in self._queue:
                if task.key == head.key and rows + task.rows <= self._max_rows:
                    batch.append(task)
                    rows += task.rows
                else:
                    kept.append(task)
            self._queue = kept
        self._queued_rows -= rows
        stats = self.stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.max_requests_in_batch = max(stats.max_requests_in_batch, len(batch))
        stats.max_rows_in_batch = max(stats.max_rows_in_batch, rows)
        return batch

    def _run(self, batch: list[_Request]) -> None:
        if len(batch) == 1:
            self._run_one(batch[0])
            return
        try:
            merged = {
                name: np.concatenate([t.inputs[name] for t in batch]) for name in batch[0].inputs
            }
            outputs = self._fn(merged)
            total = sum(t.rows for t in batch)
            if any(np.ndim(v) == 0 or np.shape(v)[0] != total for v in outputs.values()):
                raise _NotSplittable()
        except Exception as exc:
            # One bad request must not fail its neighbours: run them one by one instead.
            if not isinstance(exc, _NotSplittable):
                log.debug("merged batch failed (%s); running its requests one by one", exc)
            for task in batch:
                self._run_one(task)
            return
        start = 0
        for task in batch:
            end = start + task.rows
            task.result = {k: v[start:end] for k, v in outputs.items()}
            start = end

    def _run_one(self, task: _Request) -> None:
        try:
            task.result = self._fn(task.inputs)
        except Exception as exc:
            task.error = exc


class Batcher(_Merging):
    """Merges concurrent calls of one model function (see the module docstring).

    Args:
        fn: runs the model on a dict of batched arrays and returns a dict of arrays whose
            0th dimension equals the input rows.
        options: size and timeout of batches.
    """

    def __init__(self, fn: ModelFn, options: BatchingOptions):
        super().__init__(fn, options)
        self._cond = threading.Condition()
        self._leading = False

    def run(self, inputs: Arrays, rows: int) -> dict[str, np.ndarray]:
        """Runs one request of `rows` rows, batched with concurrent ones; returns its outputs.

        Raises:
            Exception: whatever the model function raised for this request.
        """
        task = _Task(inputs, rows)
        with self._cond:
            self._queue.append(task)
            self._queued_rows += rows
            lead = not self._leading
            self._leading = True
            if not lead and self._timeout > 0:
                # A leader may be waiting for its batch to fill.
                self._cond.notify()
        if not lead:
            task.wait()
            if not task.lead:
                return task.outcome()
        self._lead()
        return task.outcome()

    def _lead(self) -> None:
        with self._cond:
            if self._timeout > 0:
                deadline = self._queue[0].enqueued + self._timeout
                while self._queued_rows < self._max_rows:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch = self._take()
        try:
            self._run(batch)
        finally:
            with self._cond:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.wake()
                else:
                    self._leading = False
            # The leader's own task is first in the batch and is answered by returning.
            for task in batch[1:]:
                task.wake()


class AsyncBatcher(_Merging):
    """Merges concurrent requests of coroutines on one event loop (see the module docstring).

    Args:
        fn: as for Batcher.
        options: size and timeout of batches.
        executor: where merged model calls run, one at a time per batcher.
    """

    def __init__(
        self, fn: ModelFn, options: BatchingOptions, executor: concurrent.futures.Executor
    ):
        super().__init__(fn, options)
        self._executor = executor
        self._draining = False
        self._arrived = asyncio.Event()
        # True after a batch of one request that took less than INLINE_SECONDS.
        self._quiet = False
        self._inline_calls = 0

    async def run(self, inputs: Arrays, rows: int) -> dict[str, np.ndarray]:
        """Runs one request of `rows` rows, batched with concurrent ones; returns its outputs.

        Raises:
            Exception: whatever the model function raised for this request.
        """
        request = _Request(inputs, rows)
        request.done = asyncio.get_running_loop().create_future()
        self._queue.append(request)
        self._queued_rows += rows
        if not self._draining:
            self._draining = True
            # Requests that are already readable on the loop join the first batch too.
            asyncio.get_running_loop().create_task(self._drain())
        else:
            self._arrived.set()
        await request.done
        return request.outcome()

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                if self._timeout > 0:
                    await self._fill()
                batch = self._take()
                started = time.perf_counter()
                try:
                    if len(batch) == 1 and self._quiet and self._inline_next():
                        # A lone request while the server is quiet: a model this quick runs
                        # sooner on the loop than behind a switch to a worker thread.
                        self._run(batch)
                    else:
                        await loop.run_in_executor(self._executor, self._run, batch)
                    # With the switches to a worker and back: they grow with the load.
                    took = time.perf_counter() - started
                    self._quiet = len(batch) == 1 and took < INLINE_SECONDS
                finally:
                    for request in batch:
                        if not request.done.done():
                            request.done.set_result(None)
        finally:
            self._draining = False

    def _inline_next(self) -> bool:
        # While the loop runs the model no other request can arrive, so a busy server would look
        # quiet for good: every PROBE_EVERY-th lone request runs on a worker thread, and the
        # requests that arrive meanwhile make the next batch.
        self._inline_calls += 1
        return self._inline_calls % PROBE_EVERY != 0

    async def _fill(self) -> None:
        deadline = self._queue[0].enqueued + self._timeout
        while self._queued_rows < self._max_rows:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return


class _NotSplittable(Exception):
    """Outputs without a per-row 0th dimension cannot be split between requests."""


class DirectRunner:
    """The no-batching counterpart of Batcher: each request runs alone on its caller's thread."""

    def __init__(self, fn: ModelFn):
        self._fn = fn
        self.stats = BatchStats()

    def run(self, inputs: Arrays, rows: int) -> dict[str, np.ndarray]:
        """Runs one request and returns its outputs."""
        self.stats.requests += 1
        return self._fn(inputs)


class AsyncDirectRunner:
    """Runs requests one by one for coroutines, without batching.

    Each call runs on the executor, so concurrent requests run side by side while the event
    loop keeps taking more. When calls are quick (under INLINE_SECONDS) and never overlap, as
    with one client at a time, they run on the loop itself instead, which spares the switch to
    a worker thread and back. Every PROBE_EVERY-th of those goes through the executor again to
    see whether other requests arrive meanwhile; if one does, calls go back to the executor.

    Args:
        fn: runs the model on a dict of arrays.
    """

    def __init__(self, fn: ModelFn):
        self._fn = fn
        self._in_flight = 0
        self._overlapped = False
        self._inline = False
        self._inline_calls = 0

    async def run(
        self, inputs: Arrays, executor: concurrent.futures.Executor
    ) -> dict[str, np.ndarray]:
        """Runs one request and returns its outputs.

        Raises:
            Exception: whatever the model function raised for this request.
        """
        if self._inline and not self._in_flight:
            self._inline_calls += 1
            if self._inline_calls % PROBE_EVERY:
                started = time.perf_counter()
                try:
                    return self._fn(inputs)
                finally:
                    self._inline = time.perf_counter() - started < INLINE_SECONDS
        self._overlapped = self._in_flight > 0
        self._in_flight += 1
        took = INLINE_SECONDS
        try:
            outputs, took = await asyncio.get_running_loop().run_in_executor(
                executor, self._timed, inputs
            )
            return outputs
        finally:
            self._in_flight -= 1
            # The model's own time: the switches to the worker and back say nothing about it.
            self._inline = took < INLINE_SECONDS and not self._overlapped and not self._in_flight

    def _timed(self, inputs: Arrays) -> tuple[dict[str, np.ndarray], float]:
        started = time.perf_counter()
        outputs = self._fn(inputs)
        return outputs, time.perf_counter() - started
