"""Writes sampled requests to the request log (format: kerasflow.serving.request_log).

The request path only samples and puts the request's arrays on a bounded queue; when the queue
is full the record is dropped and counted, so logging never makes a request wait. One
background thread wakes every DRAIN_SECONDS, encodes what is queued and writes it, one open file
per model: locally a `.jsonl.part` file appended to and renamed to `.jsonl` when it is rotated
(by size or age) or closed; on an object store, where appends do not exist, the file is kept in
memory and uploaded whole when it is rotated or closed. Closing drains the queue first, so a
clean shutdown loses nothing that was queued.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import queue
import random
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kerasflow.runtime import fileio
from kerasflow.serving import request_log

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 << 20
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_QUEUE_RECORDS = 4096
DRAIN_SECONDS = 0.05


@dataclasses.dataclass(frozen=True)
class RequestLogOptions:
    """Where and how much to log.

    Attributes:
        uri: the log's folder or gs:// / s3:// prefix (one subfolder per model).
        sampling: the fraction of requests logged (0..1).
        max_bytes: a file is finished once it holds this many bytes.
        max_seconds: a file is finished once it is this old (so object stores see records).
        queue_records: records waiting to be written at most; more are dropped and counted.
    """

    uri: str
    sampling: float = 1.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_seconds: float = DEFAULT_MAX_SECONDS
    queue_records: int = DEFAULT_QUEUE_RECORDS


class _OpenFile:
    """The file a model's records go to now."""

    def __init__(self, folder: str, seq: int):
        self.opened = time.monotonic()
        self.size = 0
        self.records = 0
        self.final = fileio.join(folder, request_log.file_name(datetime.now(UTC), os.getpid(), seq))
        self.remote = fileio.is_remote(folder)
        if self.remote:
            self._fh: Any = io.BytesIO()
            self.part = ""
        else:
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.part = self.final[: -len(request_log.SUFFIX)] + request_log.PART_SUFFIX
            self._fh = open(self.part, "ab")  # noqa: SIM115 (kept open across records)

    def write(self, data: bytes) -> None:
        self._fh.write(data)
        self.size += len(data)
        self.records += 1

    def flush(self) -> None:
        if not self.remote:
            self._fh.flush()

    def finish(self) -> None:
        """Makes the file visible to readers under its final name."""
        if self.remote:
            fileio.write_bytes_atomic(self.final, self._fh.getvalue())
            return
        self._fh.close()
        os.replace(self.part, self.final)


class RequestLogger:
    """Samples requests onto a bounded queue; a background thread writes them.

    Args:
        options: where and how much to log.
        on_drop: called with (model, reason, count) for records that could not be logged.
        on_write: called with (model) for every record written.
    """

    def __init__(self, options: RequestLogOptions, on_drop=None, on_write=None):
        self.options = options
        self._queue: queue.Queue = queue.Queue(max(1, options.queue_records))
        self._on_drop = on_drop or (lambda model, reason, count: None)
        self._on_write = on_write or (lambda model: None)
        self._files: dict[str, _OpenFile] = {}
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.dropped = 0
        self.written = 0

    def start(self) -> RequestLogger:
        """Starts the writer thread."""
        fileio.check_uri(self.options.uri)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()
        return self

    def offer(
        self,
        *,
        model: str,
        version: int,
        signature: str,
        method: str,
        inputs: dict[str, Any],
        outputs: dict[str, Any],
    ) -> None:
        """Queues one answered request if it is sampled; never blocks."""
        sampling = self.options.sampling
        if sampling <= 0 or (sampling < 1 and random.random() >= sampling):
            return
        record = (datetime.now(UTC), model, version, signature, method, inputs, outputs)
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._drop(model, "queue_full")

    def _drop(self, model: str, reason: str, count: int = 1) -> None:
        self.dropped += count
        self._on_drop(model, reason, count)

    def close(self) -> None:
        """Writes what is queued, finishes every open file and stops the thread."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None

    def _run(self) -> None:
        # The writer wakes every DRAIN_SECONDS and takes all that is queued, rather than
        # waking on every request: a wake-up per request would compete with the request's own
        # thread for the interpreter lock just as it answers.
        stopping = False
        while not stopping:
            stopping = self._stop.wait(DRAIN_SECONDS)
            wrote = False
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                self._write(item)
                wrote = True
                time.sleep(0)  # lets a request waiting for the interpreter lock go first
            if wrote:
                for handle in self._files.values():
                    handle.flush()
            self._rotate_old()
        for model in list(self._files):
            self._finish(model)

    def _write(self, item: tuple) -> None:
        when, model, version, signature, method, inputs, outputs = item
        try:
            line = request_log.encode_record(
                model=model,
                version=version,
                signature=signature,
                method=method,
                inputs=inputs,
                outputs=outputs,
                when=when,
            ).encode("utf-8")
            handle = self._files.get(model)
            if handle is None:
                self._seq += 1
                folder = request_log.model_folder(self.options.uri, model)
                handle = self._files[model] = _OpenFile(folder, self._seq)
            handle.write(line)
        except Exception as exc:  # a full disk or an unreachable store must not stop serving
            log.error("request log: cannot write a record of model %s: %s", model, exc)
            self._drop(model, "write_error")
            return
        self.written += 1
        self._on_write(model)
        if handle.size >= self.options.max_bytes:
            self._finish(model)

    def _rotate_old(self) -> None:
        now = time.monotonic()
        for model, handle in list(self._files.items()):
            if now - handle.opened >= self.options.max_seconds:
                self._finish(model)

    def _finish(self, model: str) -> None:
        handle = self._files.pop(model)
        try:
            handle.finish()
        except Exception as exc:
            log.error("request log: cannot finish %s: %s", handle.final, exc)
            self._drop(model, "write_error", handle.records)
