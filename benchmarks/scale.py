"""How each step's time and memory grow with the data.

Generates, here, a synthetic table (numeric and categorical columns with missing values and a
binary label) and a synthetic folder of 64x64 images in class folders, each at 1x, 4x and 16x a
base size, and runs `kerasflow run` on each with a minimal budget (one random-search trial of
one epoch, a one-epoch final fit) so that the run measures data handling. For every step it
prints the wall time, the time per row and the peak RSS of the step's process (or of its
largest finished child, e.g. a trial worker), then per step:

- marginal time per row from 4x to 16x divided by that from 1x to 4x
  ((t16 - t4) / (rows16 - rows4)) / ((t4 - t1) / (rows4 - rows1)): about 1 when the step is
  linear in the rows,
- peak RSS at 16x divided by peak RSS at 4x.

Usage: python benchmarks/scale.py [--kind table|images|both] [--table-rows 125000]
       [--images 1250] [--scales 1,4,16] [--keep DIR] [--run-args "--stream-rows 1"]
(the defaults reach 2 million rows and 20,000 images at 16x; `--run-args` adds flags to every
run, e.g. `--stream-rows 1` streams the train table at every size, `0` never).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline_overhead import run_log, task_walls  # noqa: E402

from kerasflow.settings import STEPS  # noqa: E402

NUMERIC = 15
CATEGORICAL = 7


def write_table(path: Path, rows: int, seed: int = 0, chunk: int = 250_000) -> None:
    """A CSV of `rows` rows: 15 numbers, 7 categories (5% of each missing) and a label `y`."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=NUMERIC)
    first = True
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        numbers = rng.normal(size=(n, NUMERIC)) * rng.uniform(0.5, 20, NUMERIC)
        score = (numbers / numbers.std(axis=0)) @ weights
        frame = pd.DataFrame(numbers, columns=[f"x{i}" for i in range(NUMERIC)])
        for j in range(CATEGORICAL):
            levels = np.array([f"c{j}_{k}" for k in range(4 + 3 * j)], dtype=object)
            picked = rng.integers(0, len(levels), n)
            score += (picked % 3 == 0) * 0.5
            frame[f"cat{j}"] = levels[picked]
        for column in frame.columns:
            frame.loc[rng.random(n) < 0.05, column] = None
        frame["y"] = (score + rng.normal(scale=0.5, size=n) > np.median(score)).astype(int)
        frame.to_csv(path, mode="w" if first else "a", header=first, index=False)
        first = False


def write_images(root: Path, count: int, seed: int = 0, classes: int = 4) -> None:
    """`count` 64x64 grayscale PNGs in `classes` class folders (a bright bar whose position
    is the class, in noise)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k in range(classes):
        (root / f"class{k}").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        k = i % classes
        pixels = rng.integers(0, 90, (64, 64), dtype=np.uint8)
        pixels[8 + 12 * k : 16 + 12 * k, :] += 120
        Image.fromarray(pixels).save(root / f"class{k}" / f"img{i:06d}.png")


def run_pipeline(data: str, extra: list[str], work: Path) -> dict:
    """`kerasflow run` on `data` with the minimal budget; per-step wall, import, peak RSS."""
    timings = work / "timings.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "kerasflow.pipelines.cli",
        "run",
        "--data",
        data,
        *extra,
        "--tuner",
        "random",
        "--max-trials",
        "1",
        "--max-epochs",
        "1",
        "--final-epochs",
        "1",
        "--threshold",
        "accuracy=0.0",
        "--work-dir",
        str(work),
    ]
    env = {**os.environ, "KERASFLOW_TIMINGS": str(timings)}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"kerasflow run failed on {data}:\n{done.stderr[-2000:]}")
    steps: dict[str, dict] = {}
    for line in timings.read_text().splitlines():
        record = json.loads(line)
        step = steps.setdefault(record["step"], {"peak_rss_mb": 0.0})
        step["peak_rss_mb"] = max(step["peak_rss_mb"], record.get("peak_rss_mb", 0.0))
    for step, (begin, end) in task_walls(run_log(work)).items():
        steps.setdefault(step, {"peak_rss_mb": 0.0})["wall"] = end - begin
    return {"wall": wall, "steps": steps}


def report(kind: str, sizes: list[int], results: list[dict]) -> None:
    print(f"\n{kind}: sizes {', '.join(f'{n:,}' for n in sizes)}")
    head = "".join(f"{f'wall@{n:,}':>16}{'us/row':>8}{'MB':>7}" for n in sizes)
    print(f"{'step':22}{head}{'marginal':>10}{'rss16/4':>9}")
    for step in STEPS:
        cells, walls, rss = "", [], []
        for n, result in zip(sizes, results, strict=True):
            s = result["steps"].get(step, {})
            w = s.get("wall", float("nan"))
            walls.append(w)
            rss.append(s.get("peak_rss_mb", float("nan")))
            cells += f"{w:16.1f}{1e6 * w / n:8.1f}{rss[-1]:7.0f}"
        marginal, rss_growth = f"{'nan':>10}", float("nan")
        if len(sizes) >= 3:
            low = (walls[1] - walls[0]) / (sizes[1] - sizes[0])
            high = (walls[2] - walls[1]) / (sizes[2] - sizes[1])
            marginal = f"{high / low:10.2f}" if low > 0 else f"{'flat':>10}"
            rss_growth = rss[2] / rss[1] if rss[1] else float("nan")
        print(f"{step:22}{cells}{marginal}{rss_growth:9.2f}")
    print("run wall: " + ", ".join(f"{r['wall']:.0f} s" for r in results))
    print("flat: the step took no longer at 4x than at 1x, so it has no time per row to compare")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=["table", "images", "both"], default="both")
    parser.add_argument("--table-rows", type=int, default=125_000)
    parser.add_argument("--images", type=int, default=1_250)
    parser.add_argument("--scales", default="1,4,16")
    parser.add_argument("--keep", help="keep the data and work folders here")
    parser.add_argument("--run-args", default="", help="more flags for every kerasflow run")
    args = parser.parse_args()
    more = args.run_args.split()
    scales = [int(s) for s in args.scales.split(",")]
    root = Path(args.keep or tempfile.mkdtemp(prefix="kf-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        if args.kind in ("table", "both"):
            sizes = [args.table_rows * s for s in scales]
            results = []
            for n in sizes:
                data = root / f"table-{n}.csv"
                write_table(data, n)
                run_args = ["--label", "y", *more]
                results.append(run_pipeline(str(data), run_args, root / f"work-t{n}"))
            report(f"table (23 columns) {args.run_args}".rstrip(), sizes, results)
        if args.kind in ("images", "both"):
            sizes = [args.images * s for s in scales]
            results = []
            for n in sizes:
                data = root / f"images-{n}"
                write_images(data, n)
                results.append(run_pipeline(str(data), more, root / f"work-i{n}"))
            report(f"images (64x64 gray) {args.run_args}".rstrip(), sizes, results)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
