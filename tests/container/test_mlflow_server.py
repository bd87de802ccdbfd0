"""The MLflow tracking server in a container (docker/mlflow.Dockerfile), on PostgreSQL, started
by docker/mlflow-server.sh, with every pipeline step in a container tracking to it over HTTP."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest

from kerasflow import constants as C
from tests.faults import harness as h

pytestmark = pytest.mark.container

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "docker" / "mlflow-server.sh"


def postgres_problem() -> str | None:
    """Why docker/mlflow-server.sh cannot run PostgreSQL here, or None when it can."""
    found = shutil.which("pg_ctl") or any(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    if not found:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL"
    return None


def server(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_steps_in_containers_track_a_whole_run_to_the_containerized_server(image, tmp_path):
    problem = postgres_problem()
    if problem:
        pytest.skip(problem)
    folder = tmp_path / "mlflow-server"
    port = h.free_port()
    try:
        # --build: the image is rebuilt from the engine's layer cache when the Dockerfile changed.
        started = server(
            "start", "--build", "--port", str(port), "--dir", str(folder), timeout=1500
        )
        assert started.returncode == 0, started.stderr[-4000:]
        uri = started.stdout.strip()
        assert uri == f"http://127.0.0.1:{port}"
        again = server("start", "--dir", str(folder))
        assert (again.returncode, again.stdout.strip()) == (0, uri), again.stderr
        status = server("status", "--dir", str(folder))
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"mlflow: running at {uri}" in status.stdout
        assert "postgres: running on 127.0.0.1:" in status.stdout
        assert (folder / "postgres" / "PG_VERSION").is_file()

        run = h.start_run(
            tmp_path,
            "--work-dir",
            "work",
            "--runner",
            "docker",
            "--image",
            image,
            "--tracking-uri",
            uri,
            "--summary-json",
            "s.json",
        )
        code, _seconds = run.finish(900)
        assert code == 0, run.text()[-4000:]
        summary = json.loads((tmp_path / "s.json").read_text())
        assert summary["tracking_uri"] == uri
        assert summary["containers"] == len(h.STEPS) + 1  # and the exit handler
        assert summary["blessed"] is True and summary["model_version"] == 1

        client = mlflow.MlflowClient(uri)
        parent = client.get_run(summary["mlflow_run_id"])
        assert parent.info.status == "FINISHED"
        assert parent.data.tags[C.TAG_KIND] == C.KIND_PIPELINE
        experiment = parent.info.experiment_id
        assert client.get_experiment(experiment).artifact_location.startswith("mlflow-artifacts:")
        steps = client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
        )
        by_step = {s.data.tags[C.TAG_STEP]: s for s in steps}
        assert sorted(by_step) == sorted(h.STEPS) and len(steps) == len(h.STEPS)
        assert {s.info.status for s in steps} == {"FINISHED"}
        search = by_step["hyperparameter_search"].info.run_id
        trials = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{search}'")
        assert trials and {t.data.tags[C.TAG_KIND] for t in trials} == {C.KIND_TRIAL}
        assert {t.info.status for t in trials} == {"FINISHED"}

        champion = client.get_model_version_by_alias("kerasflow-model", "champion")
        assert champion.version == parent.data.tags[C.TAG_REGISTRY_VERSION] == "1"
        assert champion.status == "READY"
        # the artifacts went over HTTP into the server's mounted folder
        assert any(p.is_file() for p in (folder / "artifacts").rglob("*"))
    finally:
        stopped = server("stop", "--purge", "--dir", str(folder))
    assert stopped.returncode == 0, stopped.stderr
    after = server("status", "--dir", str(folder))
    assert after.returncode == 3
    assert after.stdout.splitlines() == ["mlflow: stopped", "postgres: stopped"]
