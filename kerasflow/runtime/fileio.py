"""Local-or-object-store file I/O and atomic writes, on fsspec.

Paths are plain strings: a local path or a URI on an object store, `gs://bucket/key` (gcsfs),
`s3://bucket/key` (s3fs) or `minio://bucket/key` (s3fs against a MinIO endpoint). Local paths
keep plain os/shutil calls: local writes that other processes read go to a temporary name in the
same directory first and are renamed into place. On object stores a single object is written in
one PUT, which readers see whole or not at all; a folder cannot be renamed as a group, so its
publishers commit through a single object written last (see components/deploy).

Object-store endpoints and credentials come from the libraries' standard settings:
- gs://: Application Default Credentials; `STORAGE_EMULATOR_HOST` points at an emulator, which
  is used without credentials.
- s3://: the AWS settings botocore reads (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
  AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3 for S3-compatible servers); fsspec's own
  `FSSPEC_S3_ENDPOINT_URL` works as well.
- minio://: the same, read through s3fs; an endpoint (one of the variables above, or
  `MINIO_ENDPOINT_URL`) is required, as KFP's own MinIO has no public default.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
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
REMOTE_SCHEMES = ("gs", "s3", "minio")
_ENDPOINT_VARS = (
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL",
    "FSSPEC_S3_ENDPOINT_URL",
    "MINIO_ENDPOINT_URL",
)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://")


def scheme(path: str | Path) -> str:
    """The URI scheme of `path` ('' for a local path)."""
    found = _SCHEME.match(str(path))
    return found.group(1) if found else ""


def is_remote(path: str | Path) -> bool:
    """True when `path` is an object-store URI (gs://, s3:// or minio://)."""
    return scheme(path) in REMOTE_SCHEMES


def is_gcs(path: str | Path) -> bool:
    """True when `path` is a gs:// URI."""
    return str(path).startswith(GCS_PREFIX)


def check_uri(path: str) -> None:
    """Rejects URIs this layer cannot reach, so they never become odd local paths.

    Raises:
        UserError: for an unsupported scheme or a URI without a bucket.
    """
    found = scheme(path)
    if not found or found == "file":
        return
    if found not in REMOTE_SCHEMES:
        raise UserError(
            f"unsupported storage URI {path}: use a local path, gs://, s3:// or minio://"
        )
    if not str(path)[len(found) + 3 :].split("/", 1)[0]:
        raise UserError(f"bad {found}:// URI (no bucket): {path}")


def _endpoint() -> str:
    return next((os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), "")


def filesystem(path: str) -> tuple[Any, str]:
    """The fsspec filesystem for a remote `path` and the path as that filesystem names it.

    Listing caches are off: servers poll the same prefixes for new versions.

    Raises:
        UserError: for an unsupported or malformed URI, or minio:// without an endpoint.
    """
    import fsspec

    check_uri(path)
    found = scheme(path)
    rest = path[len(found) + 3 :]
    if found == "gs":
        # gcsfs's plain JSON-API class: its default (extended) class first asks the Storage
        # Control gRPC API for each bucket's type, for zonal/HNS features we do not use.
        from gcsfs.core import GCSFileSystem

        options: dict[str, Any] = {"use_listings_cache": False}
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            options["token"] = "anon"  # the emulator takes no credentials
        return GCSFileSystem(**options), rest
    options = {"use_listings_cache": False}
    endpoint = _endpoint()
    if found == "minio" and not endpoint:
        raise UserError(
            f"{path}: minio:// needs an endpoint: set AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) "
            "to the MinIO server's URL"
        )
    if endpoint:
        options["endpoint_url"] = endpoint
    return fsspec.filesystem("s3", **options), rest


def _remote_error(path: str, exc: Exception) -> UserError:
    """One line naming what went wrong with a remote path (no bucket, no access, no credentials)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    name = type(exc).__name__
    if "NoCredentials" in name or "credentials" in text.lower():
        return UserError(f"{path}: no credentials for the object store ({text})")
    if isinstance(exc, PermissionError):
        return UserError(f"{path}: access denied ({text})")
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return UserError(f"{path}: the bucket does not exist")
    return UserError(f"{path}: {text}")


@contextlib.contextmanager
def _remote(path: str) -> Iterator[None]:
    """Turns object-store failures a user can cause into a UserError naming `path`."""
    try:
        yield
    except FileNotFoundError as exc:
        if "bucket" in str(exc).lower():
            raise UserError(f"{path}: the bucket does not exist") from None
        raise
    except (UserError, FileExistsError):
        raise
    except Exception as exc:
        if isinstance(exc, PermissionError) or type(exc).__module__.split(".")[0] in (
            "botocore",
            "aiobotocore",
            "google",
            "gcsfs",
            "s3fs",
        ):
            raise _remote_error(path, exc) from None
        raise


def join(base: str, *parts: str) -> str:
    """Joins path parts for local paths and object-store URIs alike."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts if p.strip("/")]])
    return str(Path(base, *parts))


def parent(path: str) -> str:
    """The folder holding `path` (a URI stays a URI)."""
    if is_remote(path):
        return path.rstrip("/").rsplit("/", 1)[0]
    return str(Path(path).parent)


def basename(path: str) -> str:
    """The last part of `path`."""
    return path.rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else Path(path).name


def exists(path: str) -> bool:
    """True when a file or folder (on an object store: an object or any object under it) exists."""
    check_uri(path)
    if not is_remote(path):
        return Path(path).exists()
    fs, key = filesystem(path)
    with _remote(path):
        return bool(fs.exists(key.rstrip("/")))


def read_bytes(path: str) -> bytes:
    """The content of the file at `path`.

    Raises:
        FileNotFoundError: when there is none.
    """
    check_uri(path)
    if not is_remote(path):
        return Path(path).read_bytes()
    fs, key = filesystem(path)
    with _remote(path):
        return fs.cat_file(key)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """Yields a local path holding the file or folder at `path` (downloaded when remote).

    Raises:
        UserError: when nothing exists at `path`.
    """
    check_uri(path)
    if not is_remote(path):
        if not Path(path).exists():
            raise UserError(f"data not found: {path}")
        yield Path(path)
        return
    fs, key = filesystem(path)
    key = key.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="kerasflow-remote-") as tmp:
        with _remote(path):
            if fs.isfile(key):
                target = Path(tmp, basename(key))
                fs.get_file(key, str(target))
            else:
                files = _remote_files(fs, key)
                if not files:
                    raise UserError(f"data not found: {path}")
                target = Path(tmp, basename(key) or "data")
                for rel in files:
                    (target / rel).parent.mkdir(parents=True, exist_ok=True)
                    fs.get_file(f"{key}/{rel}", str(target / rel))
        yield target


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Writes JSON to `path` through a temporary file and a rename (one PUT when remote)."""
    write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Writes bytes to `path` so readers see the old content or the new, never a part.

    Locally through a temporary file in the same folder and a rename; on an object store as one
    object PUT.
    """
    if is_remote(path):
        fs, key = filesystem(str(path))
        with _remote(str(path)):
            fs.pipe_file(key, data)
        return
    with local_file_atomic(path) as fh:
        fh.write(data)


@contextlib.contextmanager
def local_file_atomic(path: str | Path) -> Iterator[Any]:
    """A binary file to write whose content replaces the local `path` whole when the block
    ends without an error (a temporary file in the same folder, then a rename), so a large
    artifact is written as it is made instead of first as bytes in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def create_exclusive(path: str, data: bytes) -> bool:
    """Writes `path` only when nothing is there yet; False when it already exists.

    The precondition is the store's own (GCS `ifGenerationMatch=0`, S3 `If-None-Match: *`,
    O_EXCL locally), so of two writers racing for the same name exactly one wins.
    """
    if not is_remote(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return True
    fs, key = filesystem(path)
    with _remote(path):
        try:
            fs.pipe_file(key, data, mode="create")
        except FileExistsError:
            return False
    return True


def list_dir_names(path: str) -> list[str]:
    """Names directly under a local folder or remote prefix (empty when it does not exist)."""
    check_uri(path)
    if not is_remote(path):
        p = Path(path)
        return sorted(x.name for x in p.iterdir()) if p.is_dir() else []
    fs, key = filesystem(path)
    key = key.rstrip("/")
    with _remote(path):
        try:
            entries = fs.ls(key, detail=False)
        except FileNotFoundError:
            return []
    names = {e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != key}
    return sorted(n for n in names if n)


def _remote_files(fs: Any, key: str) -> dict[str, int]:
    """Relative name -> size of every object under the remote folder `key`."""
    try:
        found = fs.find(key.rstrip("/"), detail=True)
    except FileNotFoundError:
        return {}
    prefix = key.rstrip("/") + "/"
    return {
        name[len(prefix) :]: int(info.get("size") or 0)
        for name, info in found.items()
        if name.startswith(prefix) and info.get("type") != "directory" and not name.endswith("/")
    }


def list_files(path: str) -> dict[str, int]:
    """Relative name (with `/`) -> size of every file under a local folder or remote prefix."""
    check_uri(path)
    if is_remote(path):
        fs, key = filesystem(path)
        with _remote(path):
            return _remote_files(fs, key)
    root = Path(path)
    if not root.is_dir():
        return {}
    return {
        f.relative_to(root).as_posix(): f.stat().st_size for f in root.rglob("*") if f.is_file()
    }


def dir_digest(local_dir: Path) -> str:
    """A sha256 over the relative names and contents of every file under a local folder."""
    digest = hashlib.sha256()
    for f in sorted(p for p in Path(local_dir).rglob("*") if p.is_file()):
        digest.update(f.relative_to(local_dir).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def upload_dir(local_dir: Path, uri: str) -> None:
    """Copies a local folder under a remote prefix, file by file (overwriting what is there)."""
    fs, key = filesystem(uri)
    key = key.rstrip("/")
    with _remote(uri):
        for f in sorted(Path(local_dir).rglob("*")):
            if f.is_file():
                fs.put_file(str(f), f"{key}/{f.relative_to(local_dir).as_posix()}")


def download_dir(uri: str, local_dir: Path) -> int:
    """Copies every object under a remote prefix into a local folder; returns how many."""
    fs, key = filesystem(uri)
    with _remote(uri):
        files = _remote_files(fs, key)
        for rel in files:
            target = Path(local_dir, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(f"{key.rstrip('/')}/{rel}", str(target))
    return len(files)


def copy_dir_atomic(src: Path, dest: str, extra: dict[str, bytes] | None = None) -> None:
    """Publishes the local folder `src` at a local `dest` so readers never see a partial copy.

    Copies into a hidden temporary sibling (adding the `extra` files, name -> content), then
    renames it into place. Object stores have no
    folder rename: remote publishing goes through components/deploy, which uploads, verifies
    and only then names the version in the serving config.

    Raises:
        FileExistsError: when `dest` already exists (versions are never overwritten).
        ValueError: when `dest` is remote.
    """
    if is_remote(dest):
        raise ValueError(f"copy_dir_atomic publishes to local folders only, not {dest}")
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
        for name, data in (extra or {}).items():
            Path(tmp, name).write_bytes(data)
        try:
            os.rename(tmp, dest_path)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(dest) from None  # another writer took this name first
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove(path: str) -> None:
    """Removes one file (local or remote); nothing when it is absent."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    fs, key = filesystem(path)
    with _remote(path), contextlib.suppress(FileNotFoundError):
        fs.rm_file(key)


def remove_dir(path: str) -> None:
    """Removes a folder (local, or every object under a remote prefix)."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, key = filesystem(path)
    with _remote(path):
        for rel in _remote_files(fs, key):
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(f"{key.rstrip('/')}/{rel}")


@contextlib.contextmanager
def exclusive_lock(
    folder: str, name: str = ".kerasflow.lock", on_wait: Any = None
) -> Iterator[None]:
    """Holds an exclusive lock on `<folder>/<name>` (local folders; a no-op on object stores).

    Writers that read, change and write shared files (versions, the serving config) hold it
    so that two processes publishing at once do not lose each other's change. The kernel
    drops the lock of a process that dies, so a crash never leaves it held. `on_wait()` is
    called once when another process holds the lock. Object stores have no lock that a dead
    holder releases; there, writers claim names with `create_exclusive` instead.
    """
    if is_remote(folder):
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
