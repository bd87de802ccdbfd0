"""`kerasflow run --base-model`: transfer from a base saved locally, and ImageNet weights that
are not in the Keras cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kerasflow import constants as C
from tests.transfer_fixtures import BASE_FILE, TARGET_FILE, make_digits_transfer

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def digits_transfer(tmp_path_factory):
    return make_digits_transfer(tmp_path_factory.mktemp("transfer"), epochs=1).folder


def test_imagenet_weights_missing_from_the_cache_stop_the_run_before_any_step(tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras")}
    done = subprocess.run(
        [sys.executable, "-m", "kerasflow.pipelines.cli", "run", "--base-model", "resnet50",
         "--base-weights", "imagenet", "--work-dir", str(tmp_path / "work")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "kerasflow: error: base_weights 'imagenet': the ImageNet weights of resnet50 "
        "(resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5) are not in the Keras cache "
        f"{tmp_path / 'keras' / 'models'} and cannot be downloaded here; copy the file there or "
        "give base_weights a local weights file or saved base model"
    ]
    assert not (tmp_path / "work").exists()


# The module's base is pretrained (one epoch) in this test's setup, which with the run can pass
# the suite's 900 s per test on 2 busy cores. The test checks the mechanics, not the accuracy.
@pytest.mark.timeout(1800)
def test_transfer_run_tunes_the_head_fine_tunes_and_serves_raw_images(digits_transfer, tmp_path):
    summary_path = tmp_path / "summary.json"
    done = subprocess.run(
        [sys.executable, "-m", "kerasflow.pipelines.cli",
        "run", "--data", str(digits_transfer / TARGET_FILE),
        "--base-model", "mobilenet_v2", "--base-weights", str(digits_transfer / BASE_FILE),
        "--tuner", "random", "--max-trials", "1", "--max-epochs", "2", "--final-epochs", "3",
        "--fine-tune-epochs", "1", "--fine-tune-layers", "10", "--threshold", "accuracy=0.0",
        "--work-dir", str(tmp_path / "work"), "--summary-json", str(summary_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "fine-tuning the top 10 layers of the base" in done.stdout + done.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["best_hyperparameters"]["family"] == "transfer"
    assert summary["blessed"] is True
    # Serving takes the data's own 8x8 gray images, as without a base.
    import tensorflow as tf

    model_dir = tmp_path / "work" / "models" / "kerasflow-model" / str(summary["model_version"])
    served = tf.saved_model.load(str(model_dir))
    spec = served.signatures[C.SERVING_SIGNATURE].structured_input_signature[1]
    assert list(spec) == [C.IMAGE_INPUT]
    assert spec[C.IMAGE_INPUT].shape.as_list() == [None, 8, 8, 1]
