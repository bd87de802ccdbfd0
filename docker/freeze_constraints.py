"""Write constraints.txt: the exact versions installed here of kerasflow's dependencies.

The closure of the `kerasflow` requirements (and of its `test` extra, so that CI's install is
pinned too) is walked through the installed distributions' metadata, markers evaluated for this
interpreter, and each distribution is written with the version installed in this environment.
The image installs its dependencies with `pip install -c constraints.txt`, so it gets the
versions the test suite ran with.

    python docker/freeze_constraints.py > constraints.txt
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT_DIST = "kerasflow"
ROOT_EXTRAS = ("test",)
# pip belongs to the environment (the image's venv brings its own); kerasflow is the project.
SKIP = {"pip", "kerasflow"}


def closure() -> dict[str, str]:
    """Canonical name -> installed version for every distribution kerasflow's requirements reach."""
    found: dict[str, str] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(ROOT_DIST, ROOT_EXTRAS)]
    seen: set[tuple[str, str]] = set()
    while pending:
        name, extras = pending.pop()
        dist = metadata.distribution(name)
        key = canonicalize_name(dist.metadata["Name"])
        found[key] = dist.version
        for extra in ("",) + tuple(extras):
            if (key, extra) in seen:
                continue
            seen.add((key, extra))
            for line in dist.requires or []:
                req = Requirement(line)
                env = default_environment() | {"extra": extra}
                if req.marker is not None and not req.marker.evaluate(env):
                    continue
                if req.marker is None and extra:
                    continue  # unconditional requirements were taken with extra ""
                pending.append((req.name, tuple(sorted(req.extras))))
    return found


def main() -> int:
    found = closure()
    py = ".".join(map(str, sys.version_info[:2]))
    print(f"# kerasflow's dependency closure as installed and tested (Python {py}, linux x86_64).")
    print("# The image and CI install with `pip install -c constraints.txt`.")
    print("# Regenerate: python docker/freeze_constraints.py > constraints.txt")
    for key in sorted(found):
        if key not in SKIP:
            print(f"{key}=={found[key]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
