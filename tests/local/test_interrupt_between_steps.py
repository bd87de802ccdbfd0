"""An interrupt that lands between two steps ends the run as an interrupt, whatever kfp raises."""

from __future__ import annotations

import os
import signal

import pytest

from kerasflow.pipelines import dag, local_run
from kerasflow.settings import RunSettings

pytestmark = pytest.mark.local


def test_a_kfp_error_after_an_interrupt_is_reported_as_the_interrupt(tmp_path, monkeypatch):
    """Under the docker runner a step that refused to start can count as a success with no
    outputs, and kfp.local then raises ValueError for the next step's inputs."""

    def pipeline_interrupted_between_steps(**_arguments):
        os.kill(os.getpid(), signal.SIGINT)
        raise ValueError(
            "Tried to get output 'train_data' from task 'augment', but task 'augment' not found."
        )

    monkeypatch.setattr(dag, "build_pipeline", lambda **_kw: pipeline_interrupted_between_steps)
    monkeypatch.setenv("KERASFLOW_PREFORK", "off")
    saved = dict(os.environ)
    cfg = RunSettings(work_dir=str(tmp_path / "work"))
    try:
        with pytest.raises(local_run.PipelineInterrupted) as caught:
            local_run.run_pipeline(cfg)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert caught.value.exit_code == 128 + signal.SIGINT
    assert "interrupted by SIGINT" in str(caught.value)
    assert not list((tmp_path / "work" / "control").glob("*.stop"))


def test_the_same_kfp_error_without_an_interrupt_is_not_hidden(tmp_path, monkeypatch):
    def broken_pipeline(**_arguments):
        raise ValueError("a kfp.local bug")

    monkeypatch.setattr(dag, "build_pipeline", lambda **_kw: broken_pipeline)
    monkeypatch.setenv("KERASFLOW_PREFORK", "off")
    saved = dict(os.environ)
    try:
        with pytest.raises(ValueError, match="a kfp.local bug"):
            local_run.run_pipeline(RunSettings(work_dir=str(tmp_path)))
    finally:
        os.environ.clear()
        os.environ.update(saved)
