"""The TensorFlow.js conversion of an exported model, checked against the SavedModel.

The converter (`tensorflowjs_converter`, tensorflowjs 4.22.0) cannot share the project's
environment: it imports tensorflow-decision-forests, whose last release pins TensorFlow 2.19.
It lives in a virtual environment of its own, made by `bash .ci/setup-tfjs.sh` (default
/opt/kerasflow-tfjs), and is found through KERASFLOW_TFJS_CONVERTER (default that venv's
`bin/tensorflowjs_converter`). The same script installs the pure-JS `@tensorflow/tfjs` into the
venv's `js/` folder, where the parity check finds it.

The SavedModel's `serving_default` signature becomes a graph model (`model.json` and its weight
shards); Node then runs it on the test split (`tfjs_predict.js`, with the CPU backend) and its
answers are compared with the SavedModel's the way the TFLite variants are
(kerasflow.modeling.tflite.compare): `agreement`, `accuracy` or `mae`, `max_abs_diff`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kerasflow import constants as C
from kerasflow.runtime.errors import UserError

CONVERTER_ENV = "KERASFLOW_TFJS_CONVERTER"
NODE_ENV = "KERASFLOW_NODE"
DEFAULT_VENV = "/opt/kerasflow-tfjs"
JS_DIR = "js"
"""The folder of the converter's venv that holds node_modules/@tensorflow/tfjs."""
PREDICT_SCRIPT = Path(__file__).with_name("tfjs_predict.js")
MODEL_FILE = "model.json"
SETUP_HINT = "run `bash .ci/setup-tfjs.sh` (or set KERASFLOW_TFJS_CONVERTER)"


def converter_path() -> Path:
    """The converter executable: KERASFLOW_TFJS_CONVERTER, else the default venv's."""
    configured = os.environ.get(CONVERTER_ENV, "")
    return Path(configured) if configured else Path(DEFAULT_VENV, "bin", "tensorflowjs_converter")


def node_modules(converter: Path | None = None) -> Path:
    """The node_modules folder (with @tensorflow/tfjs) beside the converter's venv."""
    return (converter or converter_path()).parent.parent / JS_DIR / "node_modules"


def node_path() -> str | None:
    """The Node executable: KERASFLOW_NODE, else `node` on the PATH."""
    return os.environ.get(NODE_ENV) or shutil.which("node")


def missing() -> str:
    """Why `tfjs` cannot be exported here, in one line; empty when everything is in place."""
    converter = converter_path()
    if not (converter.is_file() and os.access(converter, os.X_OK)):
        return (
            f"export 'tfjs' is not available: the TensorFlow.js converter is not installed "
            f"({converter} not found); {SETUP_HINT}"
        )
    if not (node_modules(converter) / "@tensorflow" / "tfjs").is_dir():
        return (
            f"export 'tfjs' is not available: @tensorflow/tfjs is not installed in "
            f"{node_modules(converter)}; {SETUP_HINT}"
        )
    if not node_path():
        return "export 'tfjs' is not available: Node.js (`node`) is not on the PATH"
    return ""


def check_available() -> None:
    """Fails early, in one line, when the converter, @tensorflow/tfjs or Node is missing.

    Raises:
        UserError: naming what is missing and how to get it.
    """
    reason = missing()
    if reason:
        raise UserError(reason)


def _tool_env() -> dict[str, str]:
    # The converter's venv has its own TensorFlow: nothing of this process's path may leak in.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def unsupported_ops(log: str) -> list[str]:
    """The operations the converter names as unsupported in its output, if any."""
    found = re.search(r"^\w*Error: Unsupported Ops in the model[^\n]*\n([^\n]+)", log, re.M)
    if not found:
        return []
    return [op.strip() for op in found.group(1).split(",") if op.strip()]


TOOL_TIMEOUT_S = 1800
"""The longest the converter or the Node check may take before the export is given up."""


def refuse_text_models(modality: str) -> None:
    """Refuses a text model before its fit: its SavedModel takes raw strings through
    TextVectorization, whose string operations (StringLower, StringSplitV2...) TensorFlow.js
    cannot run.

    Raises:
        UserError: for the text modality.
    """
    if modality == "text":
        raise UserError(
            "export 'tfjs': TensorFlow.js cannot run a text model's string operations "
            "(TextVectorization); drop tfjs from --export"
        )


def _run_tool(command: list[str], env: dict[str, str], what: str) -> Any:
    """Runs the converter or Node; one line when it hangs past TOOL_TIMEOUT_S."""
    try:
        return subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=TOOL_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"export 'tfjs': {what} did not finish within {TOOL_TIMEOUT_S} s") from None


def convert(saved_model_dir: str | Path, out_dir: str | Path) -> None:
    """Converts the SavedModel's `serving_default` signature into a graph model in `out_dir`.

    Raises:
        UserError: when the converter is missing or cannot convert the model (naming the
            operations TensorFlow.js lacks when that is why).
    """
    check_available()
    command = [
        str(converter_path()),
        "--input_format=tf_saved_model",
        "--output_format=tfjs_graph_model",
        f"--signature_name={C.SERVING_SIGNATURE}",
        "--saved_model_tags=serve",
        str(saved_model_dir),
        str(out_dir),
    ]
    done = _run_tool(command, _tool_env(), "the TensorFlow.js converter")
    if done.returncode == 0 and Path(out_dir, MODEL_FILE).is_file():
        return
    log = f"{done.stdout}\n{done.stderr}"
    ops = unsupported_ops(log)
    if ops:
        raise UserError(
            f"export 'tfjs': TensorFlow.js cannot run operations of this model: {', '.join(ops)}"
        )
    last = [line for line in log.strip().splitlines() if line.strip()]
    raise UserError(
        f"export 'tfjs': the TensorFlow.js converter failed: {last[-1] if last else 'no output'}"
    )


def _write_inputs(folder: Path, x: dict[str, np.ndarray], batch: int) -> Path:
    rows = len(next(iter(x.values())))
    inputs = {}
    for i, (key, value) in enumerate(x.items()):
        value = np.asarray(value)
        spec: dict = {"shape": list(value.shape)}
        if value.dtype.kind in "OSU":
            texts = [v.decode() if isinstance(v, bytes) else str(v) for v in value.reshape(-1)]
            spec |= {"dtype": "string", "values": texts}
        else:
            dtype = "int32" if value.dtype.kind in "iub" else "float32"
            name = f"input_{i}.bin"
            value.astype("<i4" if dtype == "int32" else "<f4").tofile(folder / name)
            spec |= {"dtype": dtype, "file": name}
        inputs[key] = spec
    path = folder / "inputs.json"
    path.write_text(json.dumps({"rows": rows, "batch": batch, "inputs": inputs}))
    return path


def run_tfjs(model_dir: str | Path, x: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    """The graph model's `serving_default` answers (`output_0`) for every row of x, from Node.

    Raises:
        UserError: when Node or @tensorflow/tfjs is missing, or the model fails in TF.js.
    """
    check_available()
    with tempfile.TemporaryDirectory(prefix="kerasflow-tfjs-") as tmp:
        folder = Path(tmp)
        inputs = _write_inputs(folder, x, batch)
        env = _tool_env() | {
            "NODE_PATH": str(node_modules()),
            "OUTPUT_KEY": C.SERVING_OUTPUT,
        }
        command = [node_path(), str(PREDICT_SCRIPT), str(model_dir), str(inputs), tmp]
        done = _run_tool(command, env, "TensorFlow.js in Node")
        if done.returncode != 0:
            last = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise UserError(
                f"export 'tfjs': the converted model fails in TensorFlow.js: "
                f"{last[-1] if last else 'no output'}"
            )
        shape = json.loads((folder / "answers.json").read_text())["shape"]
        return np.fromfile(folder / "answers.bin", dtype="<f4").reshape(shape)


def export_graph_model(
    saved_model_dir: str | Path,
    out_dir: str | Path,
    *,
    task: str,
    test_x: dict[str, np.ndarray],
    test_y: np.ndarray,
) -> dict:
    """Writes the graph model (`model.json`, weight shards) into `out_dir` and checks it on test.

    Returns:
        The model's file, its size in bytes (model.json and shards), its shard files and its
        comparison with the SavedModel on the test rows (`agreement`, `accuracy` or `mae`,
        `max_abs_diff`), beside the SavedModel's own score (`saved_model`).
    """
    from kerasflow.modeling.tflite import compare, run_saved_model
    from kerasflow.runtime.fileio import write_bytes_atomic

    reference = run_saved_model(saved_model_dir, test_x)
    with tempfile.TemporaryDirectory(prefix="kerasflow-tfjs-model-") as tmp:
        convert(saved_model_dir, tmp)
        answers = run_tfjs(tmp, test_x)
        files = sorted(p.name for p in Path(tmp).iterdir() if p.is_file())
        size = 0
        for name in files:
            data = Path(tmp, name).read_bytes()
            size += len(data)
            write_bytes_atomic(Path(out_dir, name), data)
    shards = [name for name in files if name != MODEL_FILE]
    return {
        "graph_model": {
            "file": MODEL_FILE,
            "size_bytes": size,
            "weight_shards": shards,
            **compare(reference, answers, test_y, task),
        },
        "saved_model": compare(reference, reference, test_y, task),
    }
