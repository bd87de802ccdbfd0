"""Publishing to an object store (an in-process S3 server): verified, committed by the serving
config, idempotent on retry, and rolled back in the same order."""

from __future__ import annotations

import pytest

from kerasflow.components.deploy import core as deploy
from kerasflow.runtime import fileio
from kerasflow.tracking import registry, runs

pytest_plugins = ["tests.s3_server"]
pytestmark = pytest.mark.unit

MODEL = "m"


def make_export(path, content: bytes):
    (path / "variables").mkdir(parents=True, exist_ok=True)
    (path / "saved_model.pb").write_bytes(content)
    (path / "variables" / "variables.data-00000-of-00001").write_bytes(content * 3)
    (path / "variables" / "variables.index").write_bytes(b"index")
    return path


def pinned(serving_dir: str) -> list[int]:
    from kerasflow.serving.config import load_model_config_file

    (config,) = load_model_config_file(fileio.join(serving_dir, registry.CONFIG_FILE))
    assert not config.labels  # a moved label would keep TF Serving from loading the version
    return list(config.policy.versions)


def champion_serving_version(uri: str) -> int | None:
    return registry.get_champion(uri, MODEL).serving_version


def test_a_failed_upload_or_registry_call_leaves_the_served_version_and_retries_reuse_it(
    tmp_path, mlflow_store, s3, monkeypatch
):
    import s3fs

    serving = f"s3://{s3.bucket}/serving"
    parent = runs.find_or_create_pipeline_run(mlflow_store, "publish", "publish-1")

    def publish(export):
        return deploy.publish(export, serving, MODEL, mlflow_store, parent, {})

    first = make_export(tmp_path / "a", b"model-a")
    assert publish(first)[0] == 1
    assert pinned(serving) == [1] and champion_serving_version(mlflow_store) == 1
    # The same export again (a retried step) is found by its digest, not published again.
    assert publish(first)[:3] == (1, f"{serving}/{MODEL}/1", 1)
    assert deploy.existing_versions(f"{serving}/{MODEL}") == [1]

    second = make_export(tmp_path / "b", b"model-b")
    real_put = s3fs.S3FileSystem._put_file
    calls = []

    async def put_then_fail(self, lpath, rpath, *args, **kwargs):
        calls.append(rpath)
        if len(calls) == 2:
            raise ConnectionError("connection reset mid-upload")
        return await real_put(self, lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", put_then_fail)
    s3fs.S3FileSystem.clear_instance_cache()  # instances bind their methods when made
    with pytest.raises(ConnectionError):
        publish(second)
    monkeypatch.setattr(s3fs.S3FileSystem, "_put_file", real_put)
    s3fs.S3FileSystem.clear_instance_cache()
    assert len(calls) == 2
    assert pinned(serving) == [1] and champion_serving_version(mlflow_store) == 1
    assert deploy.read_marker(f"{serving}/{MODEL}/2") is None

    assert publish(second)[0] == 2  # the retry fills in the version it claimed
    assert pinned(serving) == [2] and champion_serving_version(mlflow_store) == 2
    assert deploy.existing_versions(f"{serving}/{MODEL}") == [1, 2]
    assert fileio.list_dir_names(f"{serving}/{MODEL}/.claims") == ["1", "2"]

    third = make_export(tmp_path / "c", b"model-c")

    def registry_down(*args, **kwargs):
        raise RuntimeError("registry unavailable")

    monkeypatch.setattr(registry, "promote", registry_down)
    with pytest.raises(RuntimeError):
        publish(third)
    monkeypatch.undo()
    # The config was pinned and then put back, as the alias could not move.
    assert pinned(serving) == [2] and champion_serving_version(mlflow_store) == 2
    version, _, registry_version, _ = publish(third)
    assert (version, registry_version) == (3, 3)
    assert deploy.existing_versions(f"{serving}/{MODEL}") == [1, 2, 3]
    assert pinned(serving) == [3] and champion_serving_version(mlflow_store) == 3

    # A rollback changes what is served on the store, and the champion with it.
    champion = registry.rollback(mlflow_store, MODEL, serving_dir=serving)
    assert champion.serving_version == 2
    assert pinned(serving) == [2]


def test_a_version_claim_is_create_if_absent(s3):
    base = f"s3://{s3.bucket}/claims-test/m"
    assert deploy.claim_version(base, "digest-a") == 1
    assert deploy.claim_version(base, "digest-b") == 2
    # An unfinished claim of the same export is taken over; another export's is skipped.
    assert deploy.claim_version(base, "digest-a") == 1
    assert deploy.claim_version(base, "digest-c") == 3
    assert not fileio.create_exclusive(f"{base}/.claims/3", b"digest-d")
    assert fileio.read_bytes(f"{base}/.claims/3") == b"digest-c"


def test_minio_needs_an_endpoint_and_unknown_schemes_are_refused(monkeypatch):
    from kerasflow.runtime.errors import UserError

    for var in fileio._ENDPOINT_VARS:
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(UserError, match="minio:// needs an endpoint"):
        fileio.exists("minio://mlpipeline/x")
    with pytest.raises(UserError, match="unsupported storage URI"):
        fileio.exists("hdfs://nn/x")
    assert fileio.join("minio://b/x", "tuning") == "minio://b/x/tuning"
