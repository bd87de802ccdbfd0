"""The README's `kerasflow` commands as its code blocks show them, and where each one runs.

The unit tier checks every command as written (`tests/unit/test_readme_commands.py`); the e2e
tier runs them (`tests/e2e/test_readme_*.py`), grouped into the stories a user meets them in.
"""

from __future__ import annotations

import shlex
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_commands() -> list[list[str]]:
    """The `kerasflow` command lines of the README's code blocks (the words after
    `kerasflow`), continuations joined, comments dropped, in the README's order."""
    commands, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block, pending = not in_block, ""
            continue
        if not in_block:
            continue
        line = pending + line
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        for part in line.split("&&"):
            if part.strip().startswith("kerasflow "):
                commands.append(shlex.split(part, comments=True)[1:])
    return commands


def flag(words: list[str], name: str) -> str | None:
    """The value of `--name VALUE` (or `--name=VALUE`) in `words`, else None."""
    for i, word in enumerate(words):
        if word == name and i + 1 < len(words):
            return words[i + 1]
        if word.startswith(name + "="):
            return word.split("=", 1)[1]
    return None


TABLES = {"builtin:breast_cancer", "builtin:diabetes", "builtin:iris"}
PRICES = {"my.csv", "new.csv"}
IMAGES = {"photos/", "digits.npz"}

ELSEWHERE = {
    "schedule": "needs a Kubeflow Pipelines API server; tests/e2e/test_submit.py runs it "
    "against a stand-in of the KFP API",
    "container": "needs the component image; tests/container/test_docker_run.py runs "
    "`kerasflow run --runner docker --image IMAGE` with the image the container tier builds",
}
"""Stories of commands that the README stories do not run, and where they are run instead."""


def story(words: list[str]) -> str:
    """The story a README command belongs to: `digits` (the default data: runs, serving,
    rollback, canary, request-log drift, lineage, reproduction, retention), `tables`, `prices`
    (a CSV of the user's, drift on new rows, retraining on drift), `transfer`, or a key of
    ELSEWHERE."""
    if words[0] == "schedule":
        return "schedule"
    if words[0] == "run" and flag(words, "--runner") == "docker":
        return "container"
    data = flag(words, "--data")
    if data in PRICES:
        return "prices"
    if data in IMAGES:
        return "transfer"
    if data in TABLES or flag(words, "--config"):
        return "tables"
    return "digits"


def stories() -> dict[str, list[list[str]]]:
    """Each story's commands in the README's order, each distinct command once."""
    out: dict[str, list[list[str]]] = {}
    for words in readme_commands():
        commands = out.setdefault(story(words), [])
        if words not in commands:
            commands.append(words)
    return out
