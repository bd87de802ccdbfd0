"""A Google Cloud Storage emulator for tests: in-process, in memory, on a free local port.

Test modules load this with `pytest_plugins = ["tests.gcs_emulator"]` and ask for the `gcs`
fixture. It sets STORAGE_EMULATOR_HOST, which google-cloud-storage and gcsfs (so
kerasflow.runtime.fileio) honour, so gs:// URIs resolve against the emulator, in this process and
in any subprocess the test starts (the CLI and its pipeline steps). The emulator ignores write
preconditions (`ifGenerationMatch`), which real GCS enforces.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "kerasflow-test"


@dataclass
class Emulator:
    """A running emulator: its address and a bucket ready for use."""

    host: str
    bucket: str

    def client(self):
        """A google-cloud-storage client bound to the emulator (anonymous there)."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(project="kerasflow", credentials=AnonymousCredentials())

    def upload(self, local: Path, key: str) -> str:
        """Uploads a file, or a folder file by file, under `key`; returns its gs:// URI."""
        bucket = self.client().bucket(self.bucket)
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for path in files:
            name = key if not local.is_dir() else f"{key}/{path.relative_to(local).as_posix()}"
            bucket.blob(name).upload_from_filename(str(path))
        return f"gs://{self.bucket}/{key}"

    def names(self, prefix: str = "") -> list[str]:
        """Object names under `prefix`."""
        return sorted(b.name for b in self.client().list_blobs(self.bucket, prefix=prefix))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def gcs() -> Iterator[Emulator]:
    """A fresh in-memory GCS emulator with one bucket, for the tests of one module."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    host = f"http://127.0.0.1:{port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = host
    try:
        yield Emulator(host=host, bucket=BUCKET)
    finally:
        server.stop()
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
