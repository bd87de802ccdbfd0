"""Local-or-gs:// file I/O and atomic writes.

Paths are plain strings: a local path or a `gs://bucket/key` URI. Local writes that other
processes read go to a temporary name in the same directory first and are renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kerasflow.runtime.errors import UserError

GCS_PREFIX = "gs://"


def is_gcs(path: str) -> bool:
    """True when `path` is a gs:// URI."""
    return path.startswith(GCS_PREFIX)


def split_gcs(uri: str) -> tuple[str, str]:
    """Splits `gs://bucket/key` into (bucket, key).

    Raises:
        UserError: when the URI has no bucket.
    """
    rest = uri[len(GCS_PREFIX) :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"bad gs:// URI (no bucket): {uri}")
    return bucket, key


def gcs_client():
    """A google-cloud-storage client; honours STORAGE_EMULATOR_HOST, anonymous there."""
    from google.cloud import storage

    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="kerasflow", credentials=AnonymousCredentials())
    return storage.Client()


def join(base: str, *parts: str) -> str:
    """Joins path parts for local paths and gs:// URIs alike."""
    if is_gcs(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return str(Path(base, *parts))


def exists(path: str) -> bool:
    """True when a file (or, for gs://, any object under the prefix) exists."""
    if is_gcs(path):
        bucket, key = split_gcs(path)
        blobs = gcs_client().list_blobs(bucket, prefix=key.rstrip("/"), max_results=1)
        return any(True for _ in blobs)
    return Path(path).exists()


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """Yields a local path holding the file or folder at `path` (downloaded when gs://).

    Raises:
        UserError: when nothing exists at `path`.
    """
    if not is_gcs(path):
        if not Path(path).exists():
            raise UserError(f"data not found: {path}")
        yield Path(path)
        return
    bucket_name, key = split_gcs(path)
    client = gcs_client()
    with tempfile.TemporaryDirectory(prefix="kerasflow-gcs-") as tmp:
        blobs = list(client.list_blobs(bucket_name, prefix=key))
        exact = [b for b in blobs if b.name == key]
        if exact:
            target = Path(tmp, Path(key).name)
            exact[0].download_to_filename(str(target))
            yield target
            return
        prefix = key.rstrip("/") + "/"
        inside = [b for b in blobs if b.name.startswith(prefix) and not b.name.endswith("/")]
        if not inside:
            raise UserError(f"data not found: {path}")
        root = Path(tmp, Path(key.rstrip("/")).name or "data")
        for blob in inside:
            target = root / blob.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
        yield root


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes JSON to `path` through a temporary file and a rename."""
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Writes bytes to a local `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def list_dir_names(path: str) -> list[str]:
    """Names directly under a local folder or gs:// prefix (empty when it does not exist)."""
    if is_gcs(path):
        bucket, key = split_gcs(path)
        prefix = key.rstrip("/") + "/" if key else ""
        it = gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/")
        names = {b.name[len(prefix) :].split("/")[0] for b in it}
        names |= {p[len(prefix) :].strip("/") for p in it.prefixes}
        return sorted(n for n in names if n)
    p = Path(path)
    return sorted(x.name for x in p.iterdir()) if p.is_dir() else []


def upload_dir(local_dir: Path, uri: str) -> None:
    """Copies a local folder to a gs:// prefix, file by file."""
    bucket_name, key = split_gcs(uri)
    bucket = gcs_client().bucket(bucket_name)
    for f in sorted(local_dir.rglob("*")):
        if f.is_file():
            rel = f.relative_to(local_dir).as_posix()
            bucket.blob(f"{key.rstrip('/')}/{rel}").upload_from_filename(str(f))


def copy_dir_atomic(src: Path, dest: str) -> None:
    """Publishes the folder `src` at `dest` so readers never see a partial copy.

    Locally: copy into a hidden temporary sibling, then rename. On gs://, where objects cannot be
    renamed as a group, the files are uploaded first and readers rely on a marker that the caller
    writes last.

    Raises:
        FileExistsError: when `dest` already exists (versions are never overwritten).
    """
    if is_gcs(dest):
        if exists(dest + "/"):
            raise FileExistsError(dest)
        upload_dir(src, dest)
        return
    dest_path = Path(dest)
    if dest_path.exists():
        raise FileExistsError(dest)
    dest_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_path.name}.tmp-", dir=dest_path.parent))
    try:
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
        except shutil.Error as exc:
            raise _first_os_error(exc, dest) from None
        try:
            os.rename(tmp, dest_path)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(dest) from None  # another writer took this name first
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_dir(path: str) -> None:
    """Removes a published folder (local, or every object under a gs:// prefix)."""
    if is_gcs(path):
        bucket, key = split_gcs(path)
        for blob in gcs_client().bucket(bucket).list_blobs(prefix=key.rstrip("/") + "/"):
            blob.delete()
        return
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def exclusive_lock(
    folder: str, name: str = ".kerasflow.lock", on_wait: Any = None
) -> Iterator[None]:
    """Holds an exclusive lock on `<folder>/<name>` (local folders; a no-op on gs://).

    Writers that read, change and write shared files (versions, the serving config) hold it
    so that two processes publishing at once do not lose each other's change. The kernel
    drops the lock of a process that dies, so a crash never leaves it held. `on_wait()` is
    called once when another process holds the lock.
    """
    if is_gcs(folder):
        yield
        return
    import fcntl

    Path(folder).mkdir(parents=True, exist_ok=True)
    with open(Path(folder, name), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _first_os_error(exc: shutil.Error, dest: str) -> OSError:
    """The first failure of a copytree as an OSError with its errno, naming `dest`."""
    failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
    for failure in failures:
        found = re.search(r"\[Errno (\d+)\]", str(failure[-1]))
        if found:
            code = int(found.group(1))
            return OSError(code, os.strerror(code), dest)
    return OSError(errno.EIO, str(exc), dest)
