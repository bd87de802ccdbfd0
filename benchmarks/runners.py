"""What running every step in a container costs: the same `kerasflow run` with the subprocess
runner and with `--runner docker`, one after the other in one invocation, on the same data,
budget and seed. Prints both wall times, their ratio, the test metrics of each (they must
agree) and the containers the docker run started.

Usage: python benchmarks/runners.py [--image kerasflow:dev] [--order subprocess-first|docker-first]
       [-- extra `kerasflow run` flags, e.g. --data builtin:iris --max-trials 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(runner: str, image: str, extra: list[str], where: Path) -> dict:
    args = [sys.executable, "-m", "kerasflow.pipelines.cli", "run", "--work-dir", "work"]
    args += ["--summary-json", "summary.json", *extra]
    if runner == "docker":
        args += ["--runner", "docker", "--image", image]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=where, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{runner} run failed:\n{done.stderr[-3000:]}")
    summary = json.loads((where / "summary.json").read_text())
    return {"runner": runner, "seconds": round(seconds, 1), **summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="kerasflow:dev")
    parser.add_argument("--order", default="subprocess-first")
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    order = ["subprocess", "docker"]
    if args.order == "docker-first":
        order.reverse()
    results = {}
    for runner in order:
        with tempfile.TemporaryDirectory(prefix=f"kf-{runner}-") as tmp:
            results[runner] = run(runner, args.image, args.extra, Path(tmp))
            print(
                json.dumps(
                    {
                        k: results[runner][k]
                        for k in ("runner", "seconds", "test_metrics", "model_version")
                    }
                ),
                flush=True,
            )
    sub, dock = results["subprocess"], results["docker"]
    print(
        f"subprocess runner: {sub['seconds']:.1f} s; docker runner: {dock['seconds']:.1f} s; "
        f"ratio docker/subprocess {dock['seconds'] / sub['seconds']:.2f}; "
        f"containers started: {dock.get('containers')}"
    )
    same = sub["test_metrics"] == dock["test_metrics"]
    print(f"test metrics identical: {same} ({dock['test_metrics']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
