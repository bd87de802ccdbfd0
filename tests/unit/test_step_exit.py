"""A step process that succeeded skips module teardown but still runs every exit handler."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

PROGRAM = textwrap.dedent(
    """
    import atexit, sys
    from kerasflow.runtime.boundary import step_entry

    class Noisy:
        def __del__(self):
            print("torn down", flush=True)

    KEPT = Noisy()  # a module global: only a full teardown collects it
    atexit.register(lambda: print("handler registered before the step", flush=True))

    @step_entry("demo")
    def step():
        atexit.register(lambda: print("handler registered by the step", flush=True))

    step()
    if sys.argv[1] == "raise":
        raise RuntimeError("the executor failed after the step")
    print("step returned", flush=True)
    """
)


def _run(after: str, kfp_runtime: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "_KFP_RUNTIME"}
    if kfp_runtime:
        env["_KFP_RUNTIME"] = "true"
    return subprocess.run(
        [sys.executable, "-c", PROGRAM, after], env=env, capture_output=True, text=True, timeout=60
    )


def test_a_kfp_step_that_succeeded_runs_every_handler_and_skips_teardown():
    done = _run("ok", kfp_runtime=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "step returned",
        "handler registered by the step",
        "handler registered before the step",
    ]


def test_outside_kfp_and_after_a_late_failure_the_process_ends_the_normal_way():
    plain = _run("ok", kfp_runtime=False)
    assert plain.returncode == 0 and plain.stdout.splitlines()[-1] == "torn down"
    failed = _run("raise", kfp_runtime=True)
    assert failed.returncode == 1
    assert "the executor failed after the step" in failed.stderr
    assert "handler registered before the step" in failed.stdout
