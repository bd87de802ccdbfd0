"""TF Serving's config behaviours: starting with no model, labels on versions not yet loaded."""

from __future__ import annotations

import grpc
import pytest
import requests
from tensorflow_serving.apis import model_management_pb2, model_service_pb2_grpc

from kerasflow.serving.config import SPECIFIC, ModelConfig, VersionPolicy
from tests.serving_fixtures import publish, running_server, wait_for

pytest_plugins = ["tests.serving_fixtures"]
pytestmark = pytest.mark.e2e


def _pinned(base, version: int) -> str:
    return (
        f"model_config_list {{ config {{ name: 'digits' base_path: '{base}' "
        f"model_platform: 'tensorflow' model_version_policy {{ specific {{ versions: {version} }} "
        f"}} version_labels {{ key: 'stable' value: {version} }} }} }}\n"
    )


def test_a_server_starts_with_no_model_and_serves_the_version_a_deploy_pins(
    serving_exports, tmp_path
):
    config = tmp_path / "models.config"
    config.write_text("model_config_list {}\n")
    with running_server(
        [],
        config_file=str(config),
        config_poll_seconds=0.2,
        allow_labels_for_unavailable=True,
    ) as server:
        url = f"{server.rest_url}/v1/models/digits"
        assert requests.get(url, timeout=10).status_code == 404  # ready, nothing served yet
        publish(serving_exports.digits_v1, tmp_path / "digits", 1)
        config.write_text(_pinned(tmp_path / "digits", 1))

        def stable() -> bool:
            return requests.get(f"{url}/labels/stable", timeout=10).status_code == 200

        wait_for(stable, what="the pinned version served under its label")


def test_without_the_flag_a_new_label_on_a_version_not_loaded_is_refused(serving_exports, tmp_path):
    base = tmp_path / "digits"
    publish(serving_exports.digits_v1, base, 1)
    publish(serving_exports.digits_v2, base, 2)
    first = ModelConfig("digits", str(base), policy=VersionPolicy(SPECIFIC, versions=(1,)))
    with running_server([first]) as server:
        request = model_management_pb2.ReloadConfigRequest()
        config = request.config.model_config_list.config.add(name="digits", base_path=str(base))
        config.model_version_policy.specific.versions.append(2)
        config.version_labels["canary"] = 2
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.HandleReloadConfigRequest(request, timeout=60)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not currently available" in info.value.details()
        # The refused config changed nothing: version 1 still serves, 2 was never loaded.
        status = requests.get(f"{server.rest_url}/v1/models/digits", timeout=10).json()
        assert [s["version"] for s in status["model_version_status"]] == ["1"]
