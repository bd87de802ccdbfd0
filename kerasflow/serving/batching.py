"""Server-side batching: concurrent requests to one signature become one model call.

One worker thread per signature takes every queued request that fits into `max_batch_size` rows,
concatenates them along the 0th dimension, calls the model once and splits the outputs back. With
`batch_timeout_micros` = 0 the worker never waits for more requests: a lone request runs at once,
and requests that arrive while the model is busy form the next batch. A positive timeout lets a
batch wait (from its first request) for more rows, as in TF Serving's batching parameters.
"""

from __future__ import annotations

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


class _Task:
    __slots__ = ("inputs", "rows", "key", "future", "enqueued")

    def __init__(self, inputs: Arrays, rows: int):
        self.inputs = inputs
        self.rows = rows
        # Only tensors that agree beyond the 0th dimension can be concatenated.
        self.key = tuple((k, v.dtype.str, v.shape[1:]) for k, v in sorted(inputs.items()))
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.enqueued = time.monotonic()


def _settle(future: concurrent.futures.Future, result=None, error: BaseException | None = None):
    # The waiting side may have been cancelled (a client went away); nothing to deliver then.
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass


class Batcher:
    """Merges concurrent calls of one model function.

    Args:
        fn: runs the model on a dict of batched arrays and returns a dict of arrays whose
            0th dimension equals the input rows.
        options: size and timeout of batches.
        name: used for the worker thread's name.
    """

    def __init__(self, fn: ModelFn, options: BatchingOptions, name: str = "model"):
        self._fn = fn
        self._max_rows = max(1, options.max_batch_size)
        self._timeout = max(0, options.batch_timeout_micros) / 1e6
        self._cond = threading.Condition()
        self._queue: collections.deque[_Task] = collections.deque()
        self._queued_rows = 0
        self._closed = False
        self.stats = BatchStats()
        self._thread = threading.Thread(target=self._work, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def submit(self, inputs: Arrays, rows: int) -> concurrent.futures.Future:
        """Queues one request of `rows` rows; the future resolves to its own outputs."""
        task = _Task(inputs, rows)
        with self._cond:
            if not self._closed:
                self._queue.append(task)
                self._queued_rows += rows
                self._cond.notify()
                return task.future
        # A request that picked this version just before it was unloaded still gets an answer.
        self._run([task])
        return task.future

    def close(self, wait: bool = True) -> None:
        """Runs what is queued, then stops the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if wait and threading.current_thread() is not self._thread:
            self._thread.join()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                if self._timeout > 0:
                    deadline = self._queue[0].enqueued + self._timeout
                    while not self._closed and self._queued_rows < self._max_rows:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            break
                        self._cond.wait(remaining)
                batch = self._take()
            self._run(batch)

    def _take(self) -> list[_Task]:
        head = self._queue.popleft()
        batch, rows = [head], head.rows
        if rows < self._max_rows and self._queue:
            kept: collections.deque[_Task] = collections.deque()
            for task in self._queue:
                if task.key == head.key and rows + task.rows <= self._max_rows:
                    batch.append(task)
                    rows += task.rows
                else:
                    kept.append(task)
            self._queue = kept
        self._queued_rows -= rows
        return batch

    def _run(self, batch: list[_Task]) -> None:
        stats = self.stats
        stats.batches += 1
        stats.requests += len(batch)
        stats.max_requests_in_batch = max(stats.max_requests_in_batch, len(batch))
        stats.max_rows_in_batch = max(stats.max_rows_in_batch, sum(t.rows for t in batch))
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
            _settle(task.future, {k: v[start:end] for k, v in outputs.items()})
            start = end

    def _run_one(self, task: _Task) -> None:
        try:
            result = self._fn(task.inputs)
        except Exception as exc:
            _settle(task.future, error=exc)
        else:
            _settle(task.future, result)


class _NotSplittable(Exception):
    """Outputs without a per-row 0th dimension cannot be split between requests."""


class DirectRunner:
    """The no-batching counterpart of Batcher: each request runs on its own in a thread pool."""

    def __init__(self, fn: ModelFn, executor: concurrent.futures.Executor):
        self._fn = fn
        self._executor = executor
        self.stats = BatchStats()

    def submit(self, inputs: Arrays, rows: int) -> concurrent.futures.Future:
        """Runs one request in the pool; the future resolves to its outputs."""
        self.stats.requests += 1
        try:
            return self._executor.submit(self._fn, inputs)
        except RuntimeError:
            # The pool is shut down during exit; finish the straggler in the caller's thread.
            future: concurrent.futures.Future = concurrent.futures.Future()
            try:
                future.set_result(self._fn(inputs))
            except Exception as exc:
                future.set_exception(exc)
            return future

    def close(self, wait: bool = True) -> None:
        """Nothing to stop: the pool belongs to the server."""
