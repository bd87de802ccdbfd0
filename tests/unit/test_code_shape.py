"""Shape rules of the product's code that keep settings from being passed by position."""

import ast
from pathlib import Path

import pytest

from kerasflow.settings import STEPS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("kerasflow", "components", "pipelines")
MAX_POSITIONAL = 6


def _is_kfp_function(node: ast.FunctionDef) -> bool:
    # Components and pipelines are called by keyword by KFP; their inputs are their interface.
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute) and target.attr in ("component", "pipeline"):
            return True
    return False


def _functions():
    seen = set()
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            real = path.resolve()  # kerasflow/components links to components/: read it once
            if real in seen:
                continue
            seen.add(real)
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    yield path.relative_to(ROOT), node


def positional(node: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in node.args.posonlyargs + node.args.args]
    return [n for n in names if n not in ("self", "cls")]


def test_no_product_function_takes_more_than_six_positional_parameters():
    offenders = [
        f"{path}:{node.lineno} {node.name}({len(positional(node))})"
        for path, node in _functions()
        if not _is_kfp_function(node) and len(positional(node)) > MAX_POSITIONAL
    ]
    assert offenders == []


def test_every_step_core_run_is_keyword_only():
    for path in sorted((ROOT / "components").glob("*/core.py")):
        tree = ast.parse(path.read_text())
        runs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "run"]
        assert len(runs) == 1, path
        assert positional(runs[0]) == [], path
        if path.parent.name in STEPS:  # finalize, the exit handler, has no settings
            assert "settings" in [a.arg for a in runs[0].args.kwonlyargs], path
