"""Bad data through the real CLI: exit code 2, one `kerasflow: error` line on stderr naming the
problem (or the failed step, whose line names the problem), no traceback, nothing deployed.

The full catalogue runs at the unit level (tests/unit/test_data_bad_inputs.py); these cases
prove the same messages reach a user, before the run and from inside a step.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from kerasflow.data import schema as schemas
from kerasflow.data.cleaning import CleaningReport, coerce_types
from tests.e2e import cli

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.gcs_emulator"]


def kerasflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return cli.kerasflow("run", "--work-dir", "work", *args, cwd=cwd)


def assert_refused(proc: subprocess.CompletedProcess, cwd: Path, message: str) -> None:
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kerasflow: error"), proc.stderr
    assert message in lines[0] or message in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not (cwd / "work" / "models").exists()


def write_inputs(root: Path) -> None:
    (root / "garbage.csv").write_bytes(bytes(range(256)) * 16)
    (root / "colons.csv").write_text("a:b:y\n1:2:x\n3:4:z\n")
    (root / "empty.csv").write_text("")
    (root / "flat").mkdir()
    (root / "flat" / "one.png").write_bytes(b"\x89PNG")
    (root / "ok.csv").write_text("a,b,y\n1,2,x\n3,4,z\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "garbage.csv", "--label", "y"], "garbage.csv is not a text table"),
        (["--data", "colons.csv", "--label", "y"], "only one column was found"),
        (["--data", "empty.csv", "--label", "y"], "empty.csv is empty"),
        (["--data", "flat"], "flat/ must hold one subfolder per class"),
        (["--data", "ok.csv", "--label", "y", "--schema", "nope.json"], "schema file not found"),
        (["--data", "ok.csv", "--label", "y", "--augment-methods", "blur"], "method 'blur'"),
        (["--data", "ok.csv", "--label", "y", "--missing-values", "guess"], "missing_values"),
    ],
)
def test_bad_data_is_refused_before_the_run(tmp_path, args, message):
    write_inputs(tmp_path)
    assert_refused(kerasflow(*args, cwd=tmp_path), tmp_path, message)


def test_a_missing_gs_object_is_refused_before_the_run(tmp_path, gcs):
    uri = f"gs://{gcs.bucket}/no/such.csv"
    assert_refused(
        kerasflow("--data", uri, "--label", "y", cwd=tmp_path), tmp_path, f"data not found: {uri}"
    )


def test_drift_against_a_saved_schema_stops_the_run_in_ingest(tmp_path):
    n = 60
    train = pd.DataFrame(
        {"size": [float(i % 10) for i in range(n)], "colour": ["red", "blue"] * (n // 2),
         "y": ["a", "b", "c"] * (n // 3)}
    )  # fmt: skip
    schema = schemas.infer_table_schema(
        coerce_types(train, CleaningReport()), "y", "classification", class_names=["a", "b", "c"]
    )
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    drifted = train.assign(colour=["green"] * n).drop(columns=["size"])
    drifted.to_csv(tmp_path / "new.csv", index=False)
    proc = kerasflow("--data", "new.csv", "--label", "y", "--schema", "schema.json", cwd=tmp_path)
    assert_refused(proc, tmp_path, "ingest")
    assert (
        "kerasflow: error in ingest_clean: 2 anomalies in the data against the saved schema: "
        "column 'size' is missing; column 'colour' has new categories ('green')"
    ) in proc.stdout
