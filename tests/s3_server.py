"""An S3 server for tests: moto's server mode, in-process, on a free local port.

Test modules load this with `pytest_plugins = ["tests.s3_server"]` and ask for the `s3`
fixture. It sets AWS_ENDPOINT_URL and dummy credentials, which botocore (and so s3fs and
kerasflow.runtime.fileio) honour, so s3:// and minio:// URIs resolve against the server, in this
process and in any subprocess the test starts (the CLI and its pipeline steps).
"""

from __future__ import annotations

import os
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "kerasflow-test"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    """A running server: its endpoint and a bucket ready for use."""

    endpoint: str
    bucket: str

    def client(self):
        """A boto3 S3 client bound to the server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint)

    def upload(self, local: Path, key: str) -> str:
        """Uploads a file, or a folder file by file, under `key`; returns its s3:// URI."""
        client = self.client()
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for path in files:
            name = key if not local.is_dir() else f"{key}/{path.relative_to(local).as_posix()}"
            client.upload_file(str(path), self.bucket, name)
        return f"s3://{self.bucket}/{key}"

    def names(self, prefix: str = "") -> list[str]:
        """Object names under `prefix`."""
        pages = self.client().get_paginator("list_objects_v2")
        return sorted(
            o["Key"]
            for page in pages.paginate(Bucket=self.bucket, Prefix=prefix)
            for o in page.get("Contents", [])
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """A fresh in-memory S3 server with one bucket, for the tests of one module."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its buckets in process-wide state, which the previous module's server shared.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    env = {**_ENV, "AWS_ENDPOINT_URL": endpoint}
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        handle = S3Server(endpoint=endpoint, bucket=BUCKET)
        handle.client().create_bucket(Bucket=BUCKET)
        yield handle
    finally:
        server.stop()
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
