"""The component image built by docker/build.sh: non-root, pinned, consistent, and able to run a
real step the way kfp.local.DockerRunner runs it (the `image` fixture is in conftest.py)."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = [pytest.mark.container, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[2]
EXTRA_CA_DIR = Path("/usr/local/share/ca-certificates")


def docker(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


def run_in(image: str, *command: str, user: str | None = None) -> subprocess.CompletedProcess:
    user_args = ["--user", user] if user else []
    return docker("run", "--rm", *user_args, image, *command)


def test_default_user_is_not_root(image):
    configured = docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    assert configured and configured.split(":")[0] not in ("root", "0")
    assert run_in(image, "id", "-u").stdout.strip() not in ("", "0")


def test_the_pipeline_libraries_import(image):
    result = run_in(
        image,
        "python",
        "-c",
        "import kerasflow, tensorflow, keras_tuner, mlflow, kfp; print(kerasflow.__version__)",
    )
    import kerasflow

    assert result.stdout.strip().splitlines()[-1] == kerasflow.__version__


def test_pip_check_is_clean(image):
    result = run_in(image, "pip", "check")
    assert "No broken requirements found." in result.stdout


def test_installed_versions_are_the_pinned_ones(image):
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.lower().replace("_", "-")] = version
    freeze = run_in(image, "pip", "list", "--format", "freeze").stdout.splitlines()
    installed = {}
    for line in freeze:
        name, version = line.split("==")
        installed[name.lower().replace("_", "-")] = version
    off_pin = {n: (v, pins[n]) for n, v in installed.items() if n in pins and pins[n] != v}
    assert off_pin == {}
    for headline in ("tensorflow", "keras", "keras-tuner", "kfp", "mlflow"):
        assert installed.get(headline) == pins[headline], headline


def test_kerasflow_cli_answers(image):
    result = run_in(image, "kerasflow", "--help")
    assert "usage: kerasflow" in result.stdout
    for command in ("run", "serve", "compile"):
        assert command in result.stdout


def test_the_host_ca_stays_out_of_the_image(image):
    host_certs = sorted(EXTRA_CA_DIR.glob("**/*.crt")) if EXTRA_CA_DIR.is_dir() else []
    if not host_certs:
        pytest.skip(f"this host trusts no extra CA ({EXTRA_CA_DIR} has no certificate)")
    bundle = run_in(image, "cat", "/etc/ssl/certs/ca-certificates.crt").stdout
    for cert in host_certs:
        body = "".join(cert.read_text().split("-----")[2].split())
        assert body[:200] not in "".join(bundle.split()), cert


def test_another_uid_can_write_home_and_caches(image):
    # kerasflow's Docker runner passes the caller's uid and gid rather than the image's user.
    script = (
        "import os, pathlib, tempfile, matplotlib.pyplot; "
        "pathlib.Path(os.environ['HOME'], 'probe').write_text('x'); "
        "tempfile.NamedTemporaryFile(dir=os.environ['MPLCONFIGDIR']).close(); print('ok')"
    )
    result = run_in(image, "python", "-c", script, user="12345:12345")
    assert result.stdout.strip().endswith("ok")
    assert "Matplotlib created a temporary" not in result.stderr


def test_a_real_step_runs_under_docker_runner(image, tmp_path):
    pytest.importorskip("docker", reason="kfp.local.DockerRunner needs the docker SDK")
    from kfp import local
    from kfp.local import config as local_config

    from kerasflow.components.ingest_clean.component import ingest_clean

    user = docker("image", "inspect", "--format", "{{.Config.User}}", image).stdout.strip()
    uid, _, gid = user.partition(":")
    root = tmp_path / "pipeline_root"
    root.mkdir()
    if os.geteuid() == 0:
        os.chown(root, int(uid), int(gid or uid))
    else:
        root.chmod(0o777)
    step = copy.deepcopy(ingest_clean)
    step.component_spec.implementation.container.image = image

    previous = local_config.LocalExecutionConfig.instance
    try:
        local.init(runner=local.DockerRunner(user=user), pipeline_root=str(root))
        task = step(
            settings={},
            data="builtin:iris",
            label="",
            task="",
            tracking_uri=f"sqlite:///{root}/mlflow.db",
            experiment="container-tier",
            kfp_run_id="container-tier-1",
        )
    finally:
        local_config.LocalExecutionConfig.instance = previous
    dataset = Path(task.outputs["dataset"].path)
    assert (dataset / "meta.json").is_file()
    assert dataset.stat().st_uid == int(uid)
    assert len(task.outputs["Output"]) == 32  # the pipeline's MLflow run id
