"""The container tier's image: built (or found up to date) once per session by docker/build.sh.

Every test here skips with the reason when no Docker engine answers; docker/build.sh installs and
starts one, and CI runs it before the tests.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("KERASFLOW_TEST_IMAGE", "kerasflow:dev")


def engine_problem() -> str | None:
    """Why no Docker engine can be used here, or None when one answers."""
    if shutil.which("docker") is None:
        return "no docker CLI on PATH (docker/build.sh installs Debian's docker.io)"
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 30 s"
    if info.returncode != 0:
        lines = info.stderr.strip().splitlines() or ["no output"]
        return f"no Docker engine answers (`docker info`: {lines[-1]}); docker/build.sh starts one"
    return None


@pytest.fixture(scope="session")
def image() -> str:
    """The component image's tag, built by docker/build.sh with the engine's layer cache."""
    problem = engine_problem()
    if problem:
        pytest.skip(problem)
    build = subprocess.run(
        ["bash", str(ROOT / "docker" / "build.sh"), IMAGE],
        capture_output=True,
        text=True,
        timeout=1700,
        check=False,
    )
    if build.returncode != 0:
        pytest.fail(f"docker/build.sh {IMAGE} failed:\n{(build.stdout + build.stderr)[-4000:]}")
    return IMAGE
