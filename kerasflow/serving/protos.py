"""TF Serving's BatchingParameters and MonitoringConfig protos, read from their text format.

tensorflow-serving-api ships the model-server config protos but not these two, so their message
types are declared here from TF Serving's .proto files (same package, names, numbers and types),
and text files written for `tensorflow_model_server --batching_parameters_file` or
`--monitoring_config_file` parse exactly as they do there: an unknown field is an error.
"""

from __future__ import annotations

import functools

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    text_format,
    wrappers_pb2,
)

from kerasflow.runtime.errors import UserError

_F = descriptor_pb2.FieldDescriptorProto
_FILE = "kerasflow/tensorflow_serving_extra.proto"

# (name, number, type, wrapper message or None, repeated)
_BATCHING_FIELDS = (
    ("max_batch_size", 1, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("num_batch_threads", 4, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
    ("thread_pool_name", 5, _F.TYPE_MESSAGE, ".google.protobuf.StringValue", False),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64, None, True),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None, False),
    ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, ".google.protobuf.BoolValue", False),
    ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, ".google.protobuf.Int64Value", False),
)


def _add_message(proto: descriptor_pb2.FileDescriptorProto, name: str, fields) -> None:
    message = proto.message_type.add(name=name)
    for field_name, number, kind, type_name, repeated in fields:
        field = message.field.add(
            name=field_name,
            number=number,
            type=kind,
            label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL,
        )
        if type_name:
            field.type_name = type_name


@functools.cache
def _classes() -> dict[str, type]:
    proto = descriptor_pb2.FileDescriptorProto(
        name=_FILE,
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    _add_message(proto, "BatchingParameters", _BATCHING_FIELDS)
    _add_message(
        proto,
        "PrometheusConfig",
        (("enable", 1, _F.TYPE_BOOL, None, False), ("path", 2, _F.TYPE_STRING, None, False)),
    )
    _add_message(
        proto,
        "MonitoringConfig",
        (
            (
                "prometheus_config",
                1,
                _F.TYPE_MESSAGE,
                ".tensorflow.serving.PrometheusConfig",
                False,
            ),
        ),
    )
    # A pool of our own, so these declarations never clash with a real tensorflow_serving
    # module that registers the same names in the default pool.
    pool = descriptor_pool.DescriptorPool()
    wrappers_file = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers_file)
    pool.Add(wrappers_file)
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"tensorflow.serving.{name}")
        )
        for name in ("BatchingParameters", "MonitoringConfig")
    }


def parse_text(kind: str, text: str, source: str):
    """Parses `text` as the text format of `kind` (BatchingParameters or MonitoringConfig).

    Raises:
        UserError: naming `source` when the text does not parse.
    """
    message = _classes()[kind]()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise UserError(f"invalid {kind} in {source}: {exc}") from None
    return message


def read_text_proto(kind: str, path: str, flag: str):
    """Reads and parses the file a flag names (a local path or an object-store URI).

    Raises:
        UserError: when the file cannot be read or does not parse.
    """
    from kerasflow.serving.config import read_flag_file

    return parse_text(kind, read_flag_file(path, flag), f"{flag} {path}")
