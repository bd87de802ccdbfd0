"""Every `kerasflow` command in the README's code blocks is one the CLI takes as written.

`kerasflow run` commands are checked with `--dry-run` (every setting and the data source
validated, nothing trained) in a folder holding the files they name; the other commands must
parse. The e2e tier runs them all (`tests/e2e/test_readme_*.py`).
"""

from __future__ import annotations

import pytest

from kerasflow.modeling import tfjs
from kerasflow.pipelines.cli import build_parser, main
from tests.readme import ELSEWHERE, readme_commands, stories

pytestmark = pytest.mark.unit

COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_every_kind():
    kinds = {words[0] for words in COMMANDS if words}
    assert {"run", "serve", "predict", "rollback"} <= kinds
    assert len([w for w in COMMANDS if w[:1] == ["run"]]) >= 8


def test_every_readme_command_belongs_to_a_story_the_e2e_tier_runs():
    # A command of a new kind would land in a story no test runs.
    ran = {"digits", "tables", "prices", "transfer"}
    assert set(stories()) <= ran | set(ELSEWHERE), set(stories()) - ran - set(ELSEWHERE)
    assert set(stories()) >= ran


@pytest.fixture
def user_folder(tmp_path, monkeypatch):
    """A folder with the files the README's commands name."""
    rows = ["size,rooms,price"] + [f"{40 + i},{1 + i % 4},{100 + 3 * i}" for i in range(60)]
    for name in ("my.csv", "new.csv"):
        (tmp_path / name).write_text("\n".join(rows) + "\n")
    (tmp_path / "run.yaml").write_text("data: builtin:iris\nmax_trials: 2\n")
    (tmp_path / "mymodels.py").write_text(
        "import keras\n\n\ndef build(hp, meta):\n"
        "    return keras.Sequential([keras.layers.Dense(meta['classes'])])\n"
    )
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("cat", "dog"):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.png")
    np.savez(tmp_path / "digits.npz", x=rng.random((40, 8, 8, 1)), y=np.arange(40) % 2)
    (tmp_path / "base.keras").write_bytes(b"")
    # ImageNet weights the user downloaded earlier, where Keras keeps them.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    (tmp_path / "keras-home" / "models").mkdir(parents=True)
    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
    (tmp_path / "keras-home" / "models" / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "words", [w for w in COMMANDS if w[:1] == ["run"]], ids=lambda w: " ".join(w)
)
def test_each_readme_run_command_is_valid_as_written(words, user_folder, capsys):
    code = main([*words, "--dry-run"])
    err = capsys.readouterr().err
    if any("tfjs" in w for w in words) and tfjs.missing():
        # The README says the TF.js export needs its own venv: without it, the documented line.
        assert code == 2 and "bash .ci/setup-tfjs.sh" in err, err
        return
    assert code == 0, err
    assert "the settings are valid" in err


@pytest.mark.parametrize(
    "words", [w for w in COMMANDS if w[:1] != ["run"]], ids=lambda w: " ".join(w)
)
def test_each_other_readme_command_parses(words):
    args = build_parser().parse_args(words)
    assert args.func is not None
