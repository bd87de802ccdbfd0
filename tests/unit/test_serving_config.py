"""TF Serving model config files and version policies."""

from __future__ import annotations

import pytest

from kerasflow.runtime.errors import UserError
from kerasflow.serving.config import (
    ALL,
    LATEST,
    SPECIFIC,
    ModelConfig,
    VersionPolicy,
    load_model_config_file,
    parse_model_config_text,
)
from kerasflow.serving.manager import version_numbers

pytestmark = pytest.mark.unit

CONFIG = """
model_config_list {
  config {
    name: 'digits'
    base_path: '/models/digits'
    model_platform: 'tensorflow'
    model_version_policy { specific { versions: 1 versions: 3 } }
    version_labels { key: 'stable' value: 1 }
    version_labels { key: 'canary' value: 3 }
  }
  config {
    name: "houses"
    base_path: "gs://bucket/houses"
    model_version_policy { latest { num_versions: 2 } }
  }
  config { name: "all" base_path: "/models/all" model_version_policy { all {} } }
  config { name: "plain" base_path: "/models/plain" }
}
"""


def test_the_text_format_gives_names_paths_policies_and_labels():
    digits, houses, every, plain = parse_model_config_text(CONFIG)
    assert digits == ModelConfig(
        "digits",
        "/models/digits",
        VersionPolicy(SPECIFIC, versions=(1, 3)),
        {"stable": 1, "canary": 3},
    )
    assert houses.base_path == "gs://bucket/houses"
    assert houses.policy == VersionPolicy(LATEST, num_versions=2)
    assert every.policy.kind == ALL
    assert plain.policy == VersionPolicy(LATEST, num_versions=1)
    assert dict(plain.labels) == {}


def test_an_empty_model_list_is_a_valid_config_as_in_tf_serving():
    assert parse_model_config_text("model_config_list { }") == []
    assert parse_model_config_text("") == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model_config_list { config { name: 'x' base_path: '/m' ", "bad model config"),
        (
            "model_config_list { config { name: 'x' base_path: '/a' } "
            "config { name: 'x' base_path: '/b' } }",
            "configured twice",
        ),
        (
            "model_config_list { config { name: 'x' base_path: '/a' model_platform: 'onnx' } }",
            "not supported",
        ),
        (
            "model_config_list { config { name: 'x' base_path: '/a' "
            "model_version_policy { specific { } } } }",
            "lists no versions",
        ),
        ("model_config_list { config { name: 'x' } }", "needs a base_path"),
        ("custom_model_config { }", "custom_model_config is not supported"),
    ],
)
def test_bad_configs_are_one_line_user_errors(text, match):
    with pytest.raises(UserError, match=match) as info:
        parse_model_config_text(text)
    assert "\n" not in str(info.value)


def test_missing_config_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="cannot read --model_config_file"):
        load_model_config_file(str(tmp_path / "nope.config"))
    path = tmp_path / "models.config"
    path.write_text(CONFIG)
    names = [c.name for c in load_model_config_file(str(path))]
    assert names == ["digits", "houses", "all", "plain"]


def test_version_policies_select_versions_on_disk():
    on_disk = [1, 2, 5, 9]
    assert VersionPolicy().select(on_disk) == {9}
    assert VersionPolicy(LATEST, num_versions=3).select(on_disk) == {2, 5, 9}
    assert VersionPolicy(ALL).select(on_disk) == {1, 2, 5, 9}
    assert VersionPolicy(SPECIFIC, versions=(2, 3)).select(on_disk) == {2}
    assert VersionPolicy().select([]) == set()


def test_only_integer_folder_names_are_versions():
    names = ["1", "0002", ".3.tmp-abc", "4.tmp", "tmp", "assets", "-5", "7", "٣"]
    assert version_numbers(names) == {1, 2, 7}


def test_relative_base_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ModelConfig("m", "models/m").base_path == str(tmp_path / "models" / "m")
