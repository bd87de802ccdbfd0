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
