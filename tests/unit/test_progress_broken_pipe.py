"""A step whose reader is gone keeps going until the driver watch stops it."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

SCRIPT = """
import sys
from kerasflow.runtime import boundary
for i in range(3):
    boundary.progress("train", f"epoch {i}")
print("still running", file=sys.stderr)
"""


def test_progress_lines_to_a_closed_pipe_do_not_fail_the_step():
    read, write = os.pipe()
    os.close(read)  # `kerasflow run` died: nobody reads the step's output
    try:
        proc = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write)
    assert proc.returncode == 0, proc.stderr
    assert "still running" in proc.stderr and "BrokenPipeError" not in proc.stderr
