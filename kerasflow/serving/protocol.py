"""Status and metadata responses, as protos (gRPC) and as TF Serving's REST JSON.

Both frontends build the same messages here; the REST JSON is the proto printed the way TF
Serving prints it (field names as in the .proto, default values included).
"""

from __future__ import annotations

from collections.abc import Iterable

from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from kerasflow.serving.manager import VersionStatus
from kerasflow.serving.servable import Servable

SIGNATURE_DEF_FIELD = "signature_def"

_STATES = get_model_status_pb2.ModelVersionStatus.State


def status_response(
    statuses: Iterable[VersionStatus],
) -> get_model_status_pb2.GetModelStatusResponse:
    """A GetModelStatusResponse listing `statuses`."""
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in statuses:
        entry = response.model_version_status.add()
        entry.version = status.version
        entry.state = _STATES.Value(status.state)
        entry.status.error_code = int(status.error_code)
        entry.status.error_message = status.error_message
    return response


def model_spec(servable: Servable, signature_name: str = "") -> model_pb2.ModelSpec:
    """The ModelSpec TF Serving echoes in responses: name, version, signature name."""
    spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def metadata_response(servable: Servable) -> get_model_metadata_pb2.GetModelMetadataResponse:
    """A GetModelMetadataResponse carrying the version's SignatureDefMap."""
    response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=model_spec(servable))
    response.metadata[SIGNATURE_DEF_FIELD].Pack(servable.signature_defs)
    return response


def to_json_dict(message) -> dict:
    """A proto as TF Serving's REST API prints it."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def metadata_json(servable: Servable) -> dict:
    """The REST metadata body: {"model_spec": ..., "metadata": {"signature_def": ...}}."""
    return {
        "model_spec": to_json_dict(model_spec(servable)),
        "metadata": {SIGNATURE_DEF_FIELD: to_json_dict(servable.signature_defs)},
    }
