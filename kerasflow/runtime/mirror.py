"""A local working copy of a folder on an object store, synced back while it is in use.

KerasTuner writes its directory through tf.io.gfile, which has no s3:// (and gs:// only with an
extra), so a search on an object store runs in a local copy: restored from the store at start,
and every file that changed uploaded again every few seconds and once more at the end. A retried
or preempted search then resumes from the trials that reached the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from kerasflow.runtime import fileio

SYNC_SECONDS = 5.0


class Mirror:
    """Uploads the files of `local` that changed since they were last uploaded to `remote`.

    A file is uploaded once it looks the same on two scans in a row (size and modification
    time), so a file caught half-written waits for the next scan; `sync(final=True)` uploads
    everything that changed.
    """

    def __init__(self, local: Path, remote: str):
        self.local = local
        self.remote = remote
        self._uploaded: dict[str, tuple[int, int]] = {}
        self._seen: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    def _scan(self) -> dict[str, tuple[int, int]]:
        found = {}
        for root, _, files in os.walk(self.local):
            for name in files:
                path = os.path.join(root, name)
                with contextlib.suppress(FileNotFoundError):
                    stat = os.stat(path)
                    rel = Path(path).relative_to(self.local).as_posix()
                    found[rel] = (stat.st_size, stat.st_mtime_ns)
        return found

    def restore(self) -> int:
        """Downloads what the store holds into the local copy; returns how many files."""
        count = fileio.download_dir(self.remote, self.local)
        self._uploaded = self._scan()
        return count

    def sync(self, final: bool = False) -> int:
        """Uploads changed files (settled ones unless `final`); returns how many."""
        with self._lock:
            now = self._scan()
            fs, key = fileio.filesystem(self.remote)
            count = 0
            for rel, stamp in sorted(now.items()):
                if self._uploaded.get(rel) == stamp:
                    continue
                if not final and self._seen.get(rel) != stamp:
                    continue
                try:
                    fs.put_file(str(self.local / rel), f"{key.rstrip('/')}/{rel}")
                except FileNotFoundError:
                    continue  # removed since the scan (a checkpoint being replaced)
                self._uploaded[rel] = stamp
                count += 1
            self._seen = now
            return count


@contextlib.contextmanager
def working_copy(directory: str, every: float = SYNC_SECONDS) -> Iterator[str]:
    """Yields a local folder standing for `directory`.

    A local `directory` is yielded as it is. A remote one gets a fresh local copy restored from
    the store, synced back every `every` seconds while the block runs and once more when it
    ends (also on an error, so finished trials survive a failed search).
    """
    if not fileio.is_remote(directory):
        yield directory
        return
    local = Path(tempfile.mkdtemp(prefix="kerasflow-mirror-"))
    mirror = Mirror(local, directory)
    stop = threading.Event()
    try:
        mirror.restore()

        def loop() -> None:
            while not stop.wait(every):
                with contextlib.suppress(Exception):  # the final sync reports failures
                    mirror.sync()

        thread = threading.Thread(target=loop, name="kerasflow-mirror", daemon=True)
        thread.start()
        try:
            yield str(local)
        finally:
            stop.set()
            thread.join()
            mirror.sync(final=True)
    finally:
        shutil.rmtree(local, ignore_errors=True)
