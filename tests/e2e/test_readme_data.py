"""The README's commands on the other data it shows, run as written (see
tests/e2e/readme_story.py): the built-in tables, a CSV of the user's with drift and retraining on
drift, and transfer learning from ImageNet weights in the Keras cache and from a saved base."""

from __future__ import annotations

import numpy as np
import pytest

from tests.e2e.readme_story import Story
from tests.readme import stories

pytestmark = pytest.mark.e2e

BUDGET = ["--max-trials", "1", "--max-epochs", "2", "--final-epochs", "2"]
PRICE_BUDGET = ["--max-trials", "1", "--max-epochs", "5", "--final-epochs", "60"]
"""The README's CSV run asks for r2 >= 0.6: enough epochs to reach it on a linear price."""
TRANSFER_BUDGET = [*BUDGET, "--fine-tune-epochs", "1"]


def _prices(rows: int, seed: int, size_shift: float = 0.0) -> str:
    """A CSV of flats: size, rooms and a price that follows them, with a little noise."""
    rng = np.random.default_rng(seed)
    size = rng.uniform(30, 120, rows) + size_shift
    rooms = rng.integers(1, 6, rows)
    price = 2.0 * size + 15.0 * rooms + rng.normal(0, 5, rows)
    lines = ["size,rooms,price"]
    lines += [f"{s:.1f},{r},{p:.1f}" for s, r, p in zip(size, rooms, price, strict=True)]
    return "\n".join(lines) + "\n"


def _run_story(story: Story, name: str) -> None:
    for words in stories()[name]:
        story.do(words)
    story.check()


@pytest.mark.timeout(2400)
def test_the_readme_table_runs_run_as_written(tmp_path):
    (tmp_path / "run.yaml").write_text("data: builtin:iris\nmax_trials: 2\n")
    _run_story(Story(tmp_path, BUDGET), "tables")


@pytest.mark.timeout(1800)
def test_the_readme_csv_drift_and_retraining_run_as_written(tmp_path):
    (tmp_path / "my.csv").write_text(_prices(400, seed=0))
    (tmp_path / "new.csv").write_text(_prices(200, seed=1, size_shift=60.0))  # bigger flats
    story = Story(tmp_path, PRICE_BUDGET)
    _run_story(story, "prices")
    first, drift, retrain = story.done
    assert "deployed: version 1" in first.stdout, first.stdout
    assert (tmp_path / "summary.json").is_file()
    assert drift.code == 1, drift.output  # the new flats are bigger: drift, exit 1
    assert len(story.run_ids) == 2, retrain.output


def _imagenet_cache(home) -> None:
    """MobileNetV2's no-top weights where Keras keeps downloads, as after a download on a
    machine with internet (random weights here: the file's layout is what the run reads)."""
    import keras

    (home / "models").mkdir(parents=True)
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    base.save(home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")


@pytest.mark.timeout(1800)
def test_the_readme_transfer_runs_run_as_written(tmp_path):
    from PIL import Image
    from sklearn.datasets import load_digits

    from tests.transfer_fixtures import mobilenet_cut

    rng = np.random.default_rng(0)
    for label, bright in (("cat", 60), ("dog", 190)):
        (tmp_path / "photos" / label).mkdir(parents=True)
        for i in range(8):
            pixels = np.clip(rng.normal(bright, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / label / f"{i}.png")
    digits = load_digits()
    np.savez(tmp_path / "digits.npz", x=digits.images[:300, ..., None], y=digits.target[:300])
    mobilenet_cut(seed=0).save(tmp_path / "base.keras")
    _imagenet_cache(tmp_path / "keras-home")
    story = Story(tmp_path, TRANSFER_BUDGET)
    story.env["KERAS_HOME"] = str(tmp_path / "keras-home")
    _run_story(story, "transfer")
    assert all("fine-tuning the top" in d.output for d in story.done), story.table()
