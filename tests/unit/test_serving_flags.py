"""`kerasflow serve` takes every tensorflow_model_server flag and TF Serving's text protos."""

from __future__ import annotations

import argparse
import logging

import pytest

from kerasflow.runtime.errors import UserError
from kerasflow.serving import flags
from kerasflow.serving.commands import register, run_serve
from kerasflow.serving.flags import server_options_from_args
from tests.unit.test_serving_cli_args import parse

pytestmark = pytest.mark.unit

# Every flag tensorflow_model_server 2.21 defines (model_servers/main.cc), with a value of its type.
TF_SERVING_FLAGS = {
    "port": "8500",
    "grpc_socket_path": "/tmp/s.sock",
    "rest_api_port": "8501",
    "rest_api_num_threads": "8",
    "rest_api_timeout_in_ms": "5000",
    "rest_api_enable_cors_support": "true",
    "enable_batching": "true",
    "allow_version_labels_for_unavailable_models": "true",
    "batching_parameters_file": None,
    "enable_per_model_batching_parameters": "false",
    "model_config_file": None,
    "model_config_file_poll_wait_seconds": "60",
    "model_name": None,
    "model_base_path": None,
    "num_load_threads": "2",
    "num_unload_threads": "2",
    "max_num_load_retries": "5",
    "load_retry_interval_micros": "60000000",
    "file_system_poll_wait_seconds": "30",
    "flush_filesystem_caches": "true",
    "tensorflow_session_parallelism": "0",
    "tensorflow_session_config_file": "/etc/session.config",
    "tensorflow_intra_op_parallelism": "0",
    "tensorflow_inter_op_parallelism": "0",
    "use_alts_credentials": "false",
    "ssl_config_file": "/etc/ssl.config",
    "platform_config_file": "/etc/platform.config",
    "per_process_gpu_memory_fraction": "0.5",
    "saved_model_tags": "serve",
    "grpc_channel_arguments": "grpc.max_connection_age_ms=1000",
    "grpc_max_threads": "16",
    "enable_model_warmup": "false",
    "num_request_iterations_for_warmup": "1",
    "version": None,
    "monitoring_config_file": None,
    "remove_unused_fields_from_bundle_metagraph": "true",
    "prefer_tflite_model": "false",
    "num_tflite_pools": "1",
    "num_tflite_interpreters_per_pool": "1",
    "enable_signature_method_name_check": "false",
    "xla_cpu_compilation_enabled": "false",
    "xla_gpu_compilation_enabled": "false",
    "enable_profiler": "true",
    "thread_pool_factory_config_file": "/etc/pool.config",
    "mixed_precision": "bfloat16",
    "skip_initialize_tpu": "false",
    "enable_grpc_healthcheck_service": "false",
    "enable_serialization_as_tensor_content": "false",
}


def test_every_tf_serving_flag_is_accepted_and_the_ones_with_effect_apply(tmp_path):
    config = tmp_path / "models.config"
    config.write_text("model_config_list { config { name: 'm' base_path: '/models/m' } }")
    batching = tmp_path / "batching.config"
    batching.write_text(
        "max_batch_size { value: 16 }\nbatch_timeout_micros { value: 2000 }\n"
        "num_batch_threads { value: 4 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n"
    )
    monitoring = tmp_path / "monitoring.config"
    monitoring.write_text('prometheus_config { enable: true, path: "/metrics" }')
    given = {
        **TF_SERVING_FLAGS,
        "batching_parameters_file": str(batching),
        "model_config_file": str(config),
        "monitoring_config_file": str(monitoring),
    }
    argv = [f"--{k}={v}" for k, v in given.items() if v is not None]
    args = parse("serve", *argv)
    options = server_options_from_args(args)
    assert (options.grpc_port, options.rest_port) == (8500, 8501)
    assert (options.batching.max_batch_size, options.batching.batch_timeout_micros) == (16, 2000)
    assert options.config_file == str(config) and options.config_poll_seconds == 60
    assert options.poll_seconds == 30 and options.grpc_max_threads == 16
    assert options.rest_timeout_seconds == 5 and not options.warmup
    assert options.allow_labels_for_unavailable and options.prometheus_path == "/metrics"
    ignored = flags.no_effect_flags_given(args)
    assert "--rest_api_num_threads" in ignored and "--enable_profiler" in ignored
    assert "--port" not in ignored and "--enable_batching" not in ignored
    serve = _serve_parser()
    known = {o.lstrip("-") for a in serve._actions for o in a.option_strings}
    assert set(TF_SERVING_FLAGS) <= known


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kerasflow")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    return subparsers.choices["serve"]


def test_bare_boolean_flags_turn_on_as_in_tf_serving(tmp_path):
    args = parse("serve", f"--model_base_path={tmp_path}", "--enable_batching", "--rest_api_port=9")
    assert server_options_from_args(args).batching.enabled


def test_version_prints_and_exits(capsys):
    assert run_serve(parse("serve", "--version")) == 0
    assert "tensorflow_model_server 2.21 flags" in capsys.readouterr().out


def test_flags_without_effect_are_named_in_one_warning(tmp_path, caplog, monkeypatch):
    from kerasflow.serving import server as server_mod

    class Refuse(Exception):
        pass

    def refuse(options):
        raise Refuse

    monkeypatch.setattr(server_mod, "ModelServer", refuse)
    args = parse(
        "serve", f"--model_base_path={tmp_path}", "--num_load_threads=4", "--enable_profiler"
    )
    with caplog.at_level(logging.WARNING), pytest.raises(Refuse):
        run_serve(args)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "--num_load_threads" in warning and "--enable_profiler" in warning


@pytest.mark.parametrize(
    ("extra", "content", "match"),
    [
        ([], "max_batch_size { value: 8 }", "without --enable_batching"),
        (["--enable_batching"], "max_batch_size: 8", "invalid BatchingParameters"),
        (["--enable_batching"], "no_such_field { value: 1 }", "has no field named"),
        (
            ["--enable_batching"],
            "max_batch_size { value: 8 } allowed_batch_sizes: 4",
            "must match max_batch_size",
        ),
        (["--enable_batching"], "max_batch_size { value: 0 }", "max_batch_size must be >= 1"),
    ],
)
def test_bad_batching_parameters_are_one_line_errors(tmp_path, extra, content, match):
    path = tmp_path / "batching.config"
    path.write_text(content)
    args = parse(
        "serve", f"--model_base_path={tmp_path}", f"--batching_parameters_file={path}", *extra
    )
    with pytest.raises(UserError, match=match) as info:
        server_options_from_args(args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("content", "rest", "expected"),
    [
        ("prometheus_config { enable: true }", True, "/monitoring/prometheus/metrics"),
        ("prometheus_config { enable: false }", True, None),
        ("", True, None),
        ("prometheus_config { enable: true }", False, UserError("need --rest_api_port")),
        ('prometheus_config { enable: true, path: "x" }', True, UserError("must start with /")),
        ("prometheus { enable: true }", True, UserError("invalid MonitoringConfig")),
    ],
)
def test_monitoring_config_file(tmp_path, content, rest, expected):
    path = tmp_path / "monitoring.config"
    path.write_text(content)
    argv = [f"--model_base_path={tmp_path}", f"--monitoring_config_file={path}"]
    args = parse("serve", *argv, *(["--rest_api_port=8501"] if rest else []))
    if isinstance(expected, UserError):
        with pytest.raises(UserError, match=str(expected)):
            server_options_from_args(args)
    else:
        assert server_options_from_args(args).prometheus_path == expected


def test_a_missing_monitoring_config_names_the_flag(tmp_path):
    args = parse(
        "serve",
        f"--model_base_path={tmp_path}",
        "--rest_api_port=8501",
        f"--monitoring_config_file={tmp_path}/nope",
    )
    with pytest.raises(UserError, match="cannot read --monitoring_config_file"):
        server_options_from_args(args)
