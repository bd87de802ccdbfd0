"""The README's commands on its default data, run as written (see tests/e2e/readme_story.py):
every run on digits, then serving, prediction, rollback, the request log, a canary, drift of the
logged requests, lineage, reproduction and retention, in the README's order, in one folder."""

from __future__ import annotations

import pytest

from kerasflow.modeling import tfjs
from tests.e2e.readme_story import MODEL, Story, write_digit_png
from tests.readme import stories

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.gcs_emulator"]

BUDGET = ["--max-trials", "1", "--max-epochs", "2", "--final-epochs", "2"]
"""Appended to every run. With `--champion-tolerance 1` each run's model is blessed and
deployed, so the story has the versions that `rollback --to 3` and `lineage --version 3` name."""

ENSEMBLE_BUDGET = ["--max-trials", "3", "--max-epochs", "3"]
"""An ensemble of 3 needs 3 distinct trials (Hyperband gives 3 at 3 epochs)."""

MYMODELS = """\
import keras

from kerasflow.modeling import builders


def build(hp, meta):
    inputs, x = builders.build_inputs(meta)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu")(x)
    model = keras.Model(inputs, builders.build_head(meta, x))
    return builders.compile_model(model, meta, "adam", hp.Float("lr", 1e-3, 1e-2, sampling="log"))
"""

DIGITS = stories()["digits"]


def _before(story: Story, words: list[str], gcs) -> None:
    """What a user has done before the command: clients sent requests, logs were copied."""
    if words[0] == "canary":
        # Requests reach the request log of the server the README just started; stopping it
        # finishes the log files. Then the same server again, and a run that deploys a canary.
        serve = story.done[-1].words
        story.wait_available(timeout=60)
        story.send_digits(300)
        story.serve(serve)
        story.run(["run", "--canary", *BUDGET, "--champion-tolerance", "1"])
        story.expect(story.done[-1], story.wait_available(timeout=120, versions=2),
                     "the server did not load the canary beside the stable version")  # fmt: skip
    logs = story.folder / "kerasflow-work" / "request-logs"
    for word in words:
        if word.startswith("gs://bucket/"):
            key = word.removeprefix("gs://bucket/")
            if logs.is_dir() and not gcs.names(key):
                gcs.upload(logs, key)  # the test points the emulator's helpers at "bucket"


@pytest.mark.timeout(5400)
def test_every_readme_command_on_digits_runs_as_written(tmp_path, gcs):
    gcs.client().create_bucket("bucket")
    gcs.bucket = "bucket"
    write_digit_png(tmp_path / "digit.png")
    (tmp_path / "mymodels.py").write_text(MYMODELS)
    story = Story(tmp_path, [*BUDGET, "--champion-tolerance", "1"], gcs.host)
    try:
        for words in DIGITS:
            _before(story, words, gcs)
            if words[0] == "run" and any("tfjs" in w for w in words) and tfjs.missing():
                done = story.kerasflow([*words, *BUDGET])
                story.expect(done, done.code == 2 and "bash .ci/setup-tfjs.sh" in done.stderr,
                             "without the converter's venv: not the documented line")  # fmt: skip
                continue
            extra = ENSEMBLE_BUDGET if "--ensemble" in words else []
            done = story.do(words, extra)
            if words[0] == "run" and done.code == 0:
                story.expect(done, "deployed: version" in done.stdout, "nothing was deployed")
            if words[0] == "predict" and done.code == 0:
                story.expect(done, "probab" in done.stdout.lower(), "no probabilities printed")
    finally:
        story.stop_server()
    story.check()
    assert len(story.run_ids) >= 12
    served = (tmp_path / "kerasflow-work" / "models" / MODEL).iterdir()
    assert len([p for p in served if p.name.isdigit()]) <= 5  # run --keep-versions 5
