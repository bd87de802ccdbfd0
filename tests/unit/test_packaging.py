"""The distribution installs `kerasflow` alone, and its import paths are its folders."""

import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def test_only_kerasflow_is_installed():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "package-dir" not in config
    packages = find_packages(str(ROOT), **config["packages"]["find"])
    assert packages and all(p == "kerasflow" or p.startswith("kerasflow.") for p in packages)


def test_components_and_pipelines_are_found_under_their_import_paths():
    packages = set(find_packages(str(ROOT), include=["kerasflow", "kerasflow.*"]))
    for folder in ("components", "pipelines"):
        assert (ROOT / "kerasflow" / folder).resolve() == (ROOT / folder).resolve()
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            assert ".".join(("kerasflow", *rel.parts)) in packages


def test_every_package_folder_has_an_init():
    for folder in (ROOT / "kerasflow").rglob("*"):
        if folder.is_dir() and any(folder.glob("*.py")) and "__pycache__" not in folder.parts:
            assert (folder / "__init__.py").is_file(), folder


def test_a_built_wheel_holds_every_module_under_its_import_path(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile

    # Built from a copy, so no build/ folder of an earlier build can add stale modules.
    source = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("kerasflow", "components", "pipelines"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*command, "-w", str(tmp_path / "dist"), str(source)], check=True)
    (wheel,) = (tmp_path / "dist").glob("kerasflow-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in ("kerasflow", "components", "pipelines"):
        prefix = () if folder == "kerasflow" else ("kerasflow",)
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT)
            assert "/".join((*prefix, *rel.parts)) in names, rel
    assert not any(n.split("/")[0] in ("components", "pipelines", "tests") for n in names)
