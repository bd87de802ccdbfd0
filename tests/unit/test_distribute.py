"""Distribution of the final fit: TF_CONFIG, the one-machine strategy, the refused workers."""

from __future__ import annotations

import json

import pytest

from kerasflow.modeling import distribute
from kerasflow.runtime.errors import UserError
from kerasflow.settings import RunSettings, TrainSettings

pytestmark = pytest.mark.unit


def test_tf_config_names_every_worker_and_this_ones_index():
    doc = distribute.tf_config(["10.0.0.1:2222", "10.0.0.2:2222"], 1)
    assert doc == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]},
        "task": {"type": "worker", "index": 1},
    }
    env = {"TF_CONFIG": json.dumps(doc)}
    assert distribute.cluster_from_env(env) == (2, 1)
    assert distribute.cluster_from_env({}) is None


@pytest.mark.parametrize(
    ("workers", "index", "message"),
    [
        ([], 0, "at least one worker"),
        (["a:1", "b:2"], 2, "index 2 is outside a cluster of 2"),
        (["a:1", "b"], 0, "'b' is not host:port"),
        (["a:port"], 0, "'a:port' is not host:port"),
    ],
)
def test_tf_config_refuses_a_malformed_cluster(workers, index, message):
    with pytest.raises(ValueError, match=message):
        distribute.tf_config(workers, index)


def test_one_gpu_or_none_keeps_the_default_strategy():
    import tensorflow as tf

    if distribute.visible_gpus() > 1:
        pytest.skip("several GPUs: the final fit runs under MirroredStrategy")
    assert distribute.local_strategy() is None
    assert distribute.use_local_strategy() == 1
    assert not tf.distribute.has_strategy()


def test_more_than_one_train_worker_is_refused_in_one_line():
    with pytest.raises(UserError) as err:
        RunSettings.from_values({"train_workers": 2}, {})
    line = str(err.value)
    assert line.startswith("train_workers 2: multi-worker training is not available")
    assert "keras-team/keras#20585" in line and "\n" not in line
    assert TrainSettings(train_workers=1).train_workers == 1


def test_worker_without_tf_config_exits_2(monkeypatch, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    argv = ["--splits", "s", "--train", "t", "--hparams", "h", "--model-dir", "m"]
    assert distribute.run_worker([*argv, "--backup-dir", "b"]) == 2
    assert "TF_CONFIG is not set" in capsys.readouterr().err
