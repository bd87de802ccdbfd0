"""Multi-worker final fit: two worker processes on loopback with TF_CONFIG, as a TFJob runs them.

On TensorFlow 2.21 / Keras 3.15 Keras' fit fails under MultiWorkerMirroredStrategy before its
first step (keras-team/keras#20585): this test records that exact failure. When the workers
fit, it compares their accuracy with one worker's and fails to say that `train_workers` can
be allowed.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from kerasflow.modeling import distribute
from tests.unit.test_tuning import make_tabular_bundle
from tests.unit.test_tuning_train import HPARAMS

pytestmark = pytest.mark.local
ROOT = Path(__file__).resolve().parents[2]


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def start_workers(n: int, tmp: Path, data: Path, hparams: Path) -> list[subprocess.Popen]:
    workers = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for index in range(n):
        env = {
            **os.environ,
            "TF_CONFIG": json.dumps(distribute.tf_config(workers, index)),
            "PYTHONPATH": str(ROOT),
            "CUDA_VISIBLE_DEVICES": "",
        }
        cmd = [sys.executable, "-m", "kerasflow.modeling.distribute"]
        cmd += ["--splits", str(data), "--train", str(data), "--hparams", str(hparams)]
        cmd += ["--model-dir", str(tmp / f"model{n}"), "--backup-dir", str(tmp / f"backup{n}")]
        cmd += ["--epochs", "3", "--batch-size", "16", "--seed", "3"]
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    return procs


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    out = []
    for proc in procs:
        try:
            stdout, stderr = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            pytest.fail("a worker did not finish within 300 s")
        out.append((proc.returncode, stdout, stderr))
    return out


def test_two_loopback_workers_fit_or_fail_with_the_known_keras_error(tmp_path):
    data = make_tabular_bundle(tmp_path / "bundle", rows=200, seed=3)
    hparams = tmp_path / "hparams.json"
    hparams.write_text(json.dumps(HPARAMS))

    results = finish(start_workers(2, tmp_path, data, hparams))

    if all(code == 0 for code, _, _ in results):
        two = [json.loads(stdout.strip().splitlines()[-1]) for _, stdout, _ in results]
        ((code, stdout, stderr),) = finish(start_workers(1, tmp_path, data, hparams))
        assert code == 0, stderr[-2000:]
        one = json.loads(stdout.strip().splitlines()[-1])
        assert abs(two[0]["val_accuracy"] - one["val_accuracy"]) <= 0.01
        pytest.fail(
            "Keras' fit works under MultiWorkerMirroredStrategy now: allow train_workers > 1 "
            f"(two workers {two[0]['val_accuracy']:.3f}, one {one['val_accuracy']:.3f})"
        )
    for code, _, stderr in results:
        assert code != 0
        # The strategy formed its cluster of two, then Keras' fit failed reducing a batch.
        assert all(part in stderr for part in distribute.UPSTREAM_ERROR), stderr[-3000:]
        assert "kerasflow/modeling/distribute.py" in stderr  # raised inside fit_multi_worker
