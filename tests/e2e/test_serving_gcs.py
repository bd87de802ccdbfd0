"""Serving from gs:// base paths, against an in-process GCS emulator."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from kerasflow.serving import validate_export
from kerasflow.serving.config import ModelConfig
from tests.serving_fixtures import running_server, table_batch, wait_for

pytest_plugins = ["tests.serving_fixtures", "tests.gcs_emulator"]
pytestmark = pytest.mark.e2e


def test_versions_under_a_gs_base_path_load_swap_and_validate(gcs, serving_exports, reference):
    base = gcs.upload(serving_exports.table, "models/table/1").rsplit("/", 1)[0]
    batch = table_batch(3, seed=21)
    np.testing.assert_allclose(
        validate_export(f"{base}/1", batch),
        reference(serving_exports.table, batch),
        rtol=1e-6,
        atol=1e-6,
    )
    instances = [
        {"age": batch["age"][i].tolist(), "city": [batch["city"][i][0].decode()]} for i in range(3)
    ]
    with running_server([ModelConfig("table", base)], rest_port=0) as server:
        answer = requests.post(
            f"{server.rest_url}/v1/models/table:predict", json={"instances": instances}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        np.testing.assert_allclose(
            answer.json()["predictions"],
            reference(serving_exports.table, batch),
            rtol=1e-6,
            atol=1e-6,
        )
        gcs.upload(serving_exports.table, "models/table/2")

        def version_two_serves():
            status = requests.get(f"{server.rest_url}/v1/models/table", timeout=30).json()
            return [
                s["version"] for s in status["model_version_status"] if s["state"] == "AVAILABLE"
            ] == ["2"]

        wait_for(version_two_serves, what="version 2 from gs:// to take over")
        assert server.manager.get_servable("table").path == f"{base}/2"


def test_a_model_config_file_on_gs_is_read(gcs, tmp_path):
    from kerasflow.runtime.errors import UserError
    from kerasflow.serving.config import load_model_config_file

    local = tmp_path / "models.config"
    local.write_text(
        "model_config_list { config { name: 'table' base_path: 'gs://b/models/table' "
        "model_version_policy { specific { versions: 2 } } "
        "version_labels { key: 'stable' value: 2 } } }"
    )
    uri = gcs.upload(local, "serving/models.config")
    (config,) = load_model_config_file(uri)
    assert (config.name, config.base_path, dict(config.labels)) == (
        "table",
        "gs://b/models/table",
        {"stable": 2},
    )
    with pytest.raises(UserError, match="cannot read --model_config_file"):
        load_model_config_file(f"gs://{gcs.bucket}/serving/missing.config")
