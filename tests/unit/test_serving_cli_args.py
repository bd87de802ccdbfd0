"""`serve` flags (TF Serving's names) and `predict` input handling, without a server."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from kerasflow.runtime.errors import UserError
from kerasflow.serving import dtypes
from kerasflow.serving.client import build_inputs, predictions_from_outputs, read_rows
from kerasflow.serving.commands import register
from kerasflow.serving.flags import server_options_from_args
from kerasflow.serving.signature import TensorSpec

pytestmark = pytest.mark.unit


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kerasflow")
    register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_serve_takes_tensorflow_model_server_flags(tmp_path):
    batching = tmp_path / "batching.config"
    batching.write_text("max_batch_size { value: 8 } batch_timeout_micros { value: 500 }")
    args = parse(
        "serve",
        "--port=9000",
        "--rest_api_port=9001",
        "--model_name=digits",
        f"--model_base_path={tmp_path}",
        "--file_system_poll_wait_seconds=5",
        "--enable_batching",
        f"--batching_parameters_file={batching}",
        "--max_request_bytes=1000",
        "--host=0.0.0.0",
    )
    options = server_options_from_args(args)
    assert (options.grpc_port, options.rest_port, options.host) == (9000, 9001, "0.0.0.0")
    assert options.models[0].name == "digits"
    assert options.models[0].base_path == str(tmp_path)
    assert options.poll_seconds == 5
    assert (options.batching.max_batch_size, options.batching.batch_timeout_micros) == (8, 500)
    assert options.max_request_bytes == 1000
    assert args.func.__name__ == "run_serve"


def test_serve_defaults_match_tf_serving_rest_and_batching_are_off(tmp_path):
    defaults = server_options_from_args(parse("serve", "--model_base_path", str(tmp_path)))
    assert (defaults.grpc_port, defaults.rest_port, defaults.host) == (8500, None, "127.0.0.1")
    assert defaults.models[0].name == "default"
    assert defaults.poll_seconds == 1
    assert not defaults.batching.enabled
    assert defaults.warmup and defaults.rest_timeout_seconds == 30
    assert defaults.prometheus_path is None and not defaults.allow_labels_for_unavailable
    no_rest = server_options_from_args(
        parse("serve", "--model_base_path", str(tmp_path), "--rest_api_port", "0")
    )
    assert no_rest.rest_port is None
    on = server_options_from_args(
        parse("serve", "--model_base_path", str(tmp_path), "--enable_batching")
    )
    assert on.batching.enabled and on.batching.max_batch_size == 1000
    off = server_options_from_args(
        parse("serve", "--model_base_path", str(tmp_path), "--enable_batching=false")
    )
    assert not off.batching.enabled


def test_serve_reads_a_model_config_file(tmp_path):
    config = tmp_path / "models.config"
    config.write_text(
        "model_config_list { config { name: 'a' base_path: '/m/a' } "
        "config { name: 'b' base_path: '/m/b' } }"
    )
    options = server_options_from_args(parse("serve", "--model_config_file", str(config)))
    assert [m.name for m in options.models] == ["a", "b"]


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["serve"], "give --model_base_path"),
        (["serve", "--model_base_path", "{tmp}", "--model_config_file", "x"], "not both"),
        (["serve", "--model_base_path", "{tmp}/missing"], "is not a folder"),
        (
            ["serve", "--model_base_path", "{tmp}", "--port", "8600", "--rest_api_port", "8600"],
            "give two ports",
        ),
        (["serve", "--model_config_file", "{tmp}/nope"], "cannot read --model_config_file"),
    ],
)
def test_serve_user_errors_are_one_line(tmp_path, argv, match):
    args = parse(*[a.format(tmp=tmp_path) for a in argv])
    with pytest.raises(UserError, match=match) as info:
        server_options_from_args(args)
    assert "\n" not in str(info.value)


def test_bad_flag_values_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as info:
        parse("serve", "--port", "70000")
    assert info.value.code == 2
    assert "port out of range" in capsys.readouterr().err


def test_predict_flags():
    args = parse(
        "predict",
        "--model-name",
        "m",
        "--grpc",
        "h:1",
        "--input",
        "rows.json",
        "--version",
        "3",
        "--signature-name",
        "s",
    )
    assert (args.model_name, args.grpc, args.rest, args.version) == ("m", "h:1", None, 3)
    assert args.func.__name__ == "run_predict"
    with pytest.raises(SystemExit):
        parse(
            "predict",
            "--model-name",
            "m",
            "--grpc",
            "h:1",
            "--rest",
            "http://x",
            "--input",
            "r.json",
        )


IMAGE = {"image": TensorSpec("image", dtypes.DT_FLOAT, (None, 2, 2, 1))}
TABLE = {
    "age": TensorSpec("age", dtypes.DT_FLOAT, (None, 1)),
    "city": TensorSpec("city", dtypes.DT_STRING, (None, 1)),
}


def test_csv_rows_become_typed_column_tensors_shaped_like_the_signature(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("age,city\n30,rome\n41.5,0042\n")
    inputs = build_inputs(read_rows(str(path)), TABLE)
    assert inputs["age"].dtype == np.float32 and inputs["age"].shape == (2, 1)
    assert inputs["city"].tolist() == [["rome"], ["0042"]]


def test_json_list_rows_of_flat_pixels_are_reshaped_to_the_input_shape(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([[0, 1, 2, 3], [4, 5, 6, 7]]))
    inputs = build_inputs(read_rows(str(path)), IMAGE)
    assert inputs["image"].shape == (2, 2, 2, 1)
    assert inputs["image"][1, 1, 0, 0] == 6


@pytest.mark.parametrize(
    ("content", "specs", "match"),
    [
        ("[]", IMAGE, "holds no rows"),
        ("{not json", IMAGE, "not valid JSON"),
        ('[{"age": 1}, [1]]', TABLE, "mixes objects and lists"),
        ('[{"age": 1}]', TABLE, r"has columns \['age'\], the model takes inputs"),
        ("[[1, 2]]", TABLE, "takes several inputs"),
        ('[{"age": "old", "city": "x"}]', TABLE, "takes float values"),
    ],
)
def test_bad_rows_are_user_errors(tmp_path, content, specs, match):
    path = tmp_path / "rows.json"
    path.write_text(content)
    with pytest.raises(UserError, match=match):
        build_inputs(read_rows(str(path)), specs)


def test_missing_input_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read --input"):
        read_rows(str(tmp_path / "nope.json"))


def test_predictions_are_per_row_like_the_rest_row_format():
    assert predictions_from_outputs({"y": np.array([[1.0], [2.0]])}) == [[1.0], [2.0]]
    both = predictions_from_outputs({"a": np.array([1, 2]), "b": np.array([b"x", b"y"])})
    assert both == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
