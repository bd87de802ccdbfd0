"""Importing TensorFlow without its C++ start-up lines on the console.

TensorFlow's native code writes lines such as `oneDNN custom operations are on`, `Could not find
cuda drivers` and `failed call to cuInit` straight to file descriptor 2 before its logging is set
up, so TF_CPP_MIN_LOG_LEVEL does not hide them. `kerasflow run` keeps them out of the console by
filtering the steps' output; the serving commands run TensorFlow in their own process and hold
file descriptor 2 aside while it starts instead.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_STARTUP = re.compile(
    r"^([IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog\(\)"
    r"|To enable the following instructions:)"
)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and finds its devices with fd 2 held aside; lines other than the
    start-up chatter are written back to stderr."""
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_logical_devices()  # device discovery prints the CUDA lines
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        held.seek(0)
        text = held.read().decode("utf-8", errors="replace")
    kept = [line for line in text.splitlines() if line.strip() and not _STARTUP.match(line)]
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
