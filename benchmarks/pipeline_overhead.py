"""What the pipeline costs over a plain script doing the same work.

Runs, one after the other in one invocation, (1) `kerasflow run` (seven KFP steps under
kfp.local, MLflow tracking of every step and trial; the steps forked from one warm process,
kerasflow.runtime.prefork), (2) the same with every step a fresh interpreter
(KERASFLOW_PREFORK=off), and (3) one plain single-process script that does the same work with
the same data, budget and seed (the same cleaning, split, augmentation, KerasTuner search, final
fit, evaluation and export; no KFP, no MLflow). Prints the wall times, their ratios and a
per-step breakdown of kerasflow's time (the `fresh` column: the step's wall time in run 2):

- import: heavy libraries a step imports (TensorFlow, Keras, KerasTuner),
- tracking: MLflow (its import, the runs, params, metrics, artifacts),
- work: the step's own computation,
- launch: everything else (process start, KFP executor, artifact bookkeeping).

Usage: python benchmarks/pipeline_overhead.py [--data builtin:digits] [--tuner hyperband]
       [--max-epochs 9] [--max-trials 10] [--order plain-first|kerasflow-first]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from kerasflow.settings import STEPS, AugmentSettings, SplitSettings


def plain_script(args: argparse.Namespace, out: Path) -> None:
    """The plain single-process version of the same work; writes phase times to `out`."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    import keras  # noqa: F401
    import keras_tuner  # noqa: F401
    import tensorflow  # noqa: F401

    times["import"] = time.perf_counter() - t
    from kerasflow.components.augment.core import augment_part
    from kerasflow.components.deploy.core import push
    from kerasflow.components.evaluate.core import evaluate, predict
    from kerasflow.components.hyperparameter_search.core import search
    from kerasflow.components.ingest_clean.core import build_bundle
    from kerasflow.components.normalize_split.core import split_bundle
    from kerasflow.components.train.core import export_model, fit_final
    from kerasflow.data import artifacts
    from kerasflow.data.feeds import class_weight_arg
    from kerasflow.data.sources import read_source
    from kerasflow.modeling import builders

    def phase(name, fn):
        start = time.perf_counter()
        value = fn()
        times[name] = time.perf_counter() - start
        return value

    data, _ = phase("ingest_clean", lambda: build_bundle(read_source(args.data)))
    splits = phase("normalize_split", lambda: split_bundle(data, SplitSettings(seed=args.seed)))
    meta = splits.meta
    train = phase(
        "augment",
        lambda: augment_part(
            meta, splits.parts["train"], AugmentSettings(augment_factor=1, seed=args.seed)
        ),
    )

    def datasets():
        tr = builders.make_dataset(
            artifacts.model_inputs(meta, train), artifacts.targets(meta, train), 32, True, args.seed
        )
        val = splits.parts["val"]
        va = builders.make_dataset(
            artifacts.model_inputs(meta, val), artifacts.targets(meta, val), 32
        )
        return tr, va

    train_ds, val_ds = datasets()
    work = Path(tempfile.mkdtemp(prefix="plain-"))
    best, _ = phase(
        "hyperparameter_search",
        lambda: search(
            meta,
            train_ds,
            val_ds,
            algorithm=args.tuner,
            max_trials=args.max_trials,
            max_epochs=args.max_epochs,
            patience=3,
            tuner_dir=str(work / "tuner"),
            seed=args.seed,
            track=False,
        ),
    )
    model, _ = phase(
        "train",
        lambda: fit_final(
            meta,
            train_ds,
            val_ds,
            best,
            epochs=30,
            patience=3,
            seed=args.seed,
            class_weight=class_weight_arg(meta),
        ),
    )
    test = splits.parts["test"]
    result = phase(
        "evaluate",
        lambda: evaluate(meta, artifacts.targets(meta, test), predict(model, meta, test), {}),
    )
    phase(
        "deploy",
        lambda: (
            export_model(model, work / "model", meta),
            push(work / "model" / "saved_model", str(work / "models"), "m"),
        ),
    )
    out.write_text(json.dumps({"times": times, "metrics": result.metrics, "best": best}))


def budget_flags(args: argparse.Namespace) -> list[str]:
    """The flags that make both runs do the same work: data, budget and seed."""
    return [
        "--data",
        args.data,
        "--tuner",
        args.tuner,
        "--max-epochs",
        str(args.max_epochs),
        "--max-trials",
        str(args.max_trials),
        "--seed",
        str(args.seed),
    ]


def run_plain(args: argparse.Namespace) -> dict:
    out = Path(tempfile.mkdtemp()) / "plain.json"
    cmd = [
        sys.executable,
        __file__,
        "--plain-out",
        str(out),
        *budget_flags(args),
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    result = json.loads(out.read_text())
    result["wall"] = time.perf_counter() - started
    return result


def run_kerasflow(args: argparse.Namespace, prefork: bool = True) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kf-bench-"))
    timings = work / "timings.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "kerasflow.pipelines.cli",
        "run",
        *budget_flags(args),
        "--work-dir",
        str(work),
        "--summary-json",
        str(work / "summary.json"),
    ]
    env = {**__import__("os").environ, "KERASFLOW_TIMINGS": str(timings)}
    if not prefork:
        env["KERASFLOW_PREFORK"] = "off"
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    wall = time.perf_counter() - started
    steps = {
        json.loads(line)["step"]: json.loads(line) for line in timings.read_text().splitlines()
    }
    log = run_log(work)
    for step, (begin, end) in task_walls(log).items():
        # The exit handler (finalize) records no timings of its own: all of it counts as launch.
        blank = {"import_s": 0.0, "tracking_s": 0.0, "work_s": 0.0}
        steps.setdefault(step, blank)["wall"] = end - begin
    summary = json.loads((work / "summary.json").read_text())
    return {
        "wall": wall,
        "steps": steps,
        "metrics": summary["test_metrics"],
        "best": summary["best_hyperparameters"],
    }


def run_log(work: Path) -> str:
    """The text of the run's own log in `work` (not the prefork server's beside it)."""
    logs = (work / "logs").glob("run-*.log")
    return next(p for p in logs if ".prefork" not in p.name).read_text()


def task_walls(log: str) -> dict[str, tuple[float, float]]:
    """Start and end of each task from kfp.local's log lines."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", log)
    marks: dict[str, list[float]] = {}
    pattern = r"(\d\d:\d\d:\d\d\.\d+) - INFO - (?:Executing task|Task) '([\w-]+)'"
    for stamp, task in re.findall(pattern, plain):
        secs = datetime.strptime(stamp, "%H:%M:%S.%f")
        marks.setdefault(task.replace("-", "_"), []).append(
            secs.hour * 3600 + secs.minute * 60 + secs.second + secs.microsecond / 1e6
        )
    return {k: (v[0], v[-1]) for k, v in marks.items() if len(v) >= 2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="builtin:digits")
    parser.add_argument("--tuner", default="hyperband")
    parser.add_argument("--max-epochs", type=int, default=9)
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--order", choices=["plain-first", "kerasflow-first"], default="plain-first"
    )
    parser.add_argument("--plain-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_out:
        plain_script(args, Path(args.plain_out))
        return

    def run_fresh(args: argparse.Namespace) -> dict:
        return run_kerasflow(args, prefork=False)

    runs = [run_plain, run_kerasflow, run_fresh]
    if args.order == "kerasflow-first":
        runs = [run_kerasflow, run_fresh, run_plain]
    results = {fn.__name__: fn(args) for fn in runs}
    plain, kf, fresh = results["run_plain"], results["run_kerasflow"], results["run_fresh"]
    print(
        f"data {args.data}, tuner {args.tuner}, max_epochs {args.max_epochs}, "
        f"max_trials {args.max_trials}, seed {args.seed}"
    )
    print(f"plain script : {plain['wall']:7.1f} s  test {fmt(plain['metrics'])}")
    print(f"kerasflow run: {kf['wall']:7.1f} s  test {fmt(kf['metrics'])}")
    print(f"fresh steps  : {fresh['wall']:7.1f} s  test {fmt(fresh['metrics'])}")
    differ = sorted(k for k in kf["best"] if kf["best"][k] != plain["best"].get(k))
    print(
        "best hyperparameters, kerasflow against plain: "
        + (f"differ in {', '.join(differ)}" if differ else "the same")
    )
    print(f"ratio kerasflow / plain: {kf['wall'] / plain['wall']:.2f}")
    print(f"ratio fresh steps / plain: {fresh['wall'] / plain['wall']:.2f}")
    print()
    header = f"{'step':24}{'wall':>8}{'import':>8}{'tracking':>9}{'work':>8}{'launch':>8}"
    print(f"{header}{'fresh':>8}{'plain':>8}")
    keys = ["wall", "import_s", "tracking_s", "work_s", "launch", "fresh", "plain"]
    totals = dict.fromkeys(keys, 0.0)
    for step in (*STEPS, "finalize"):
        s = kf["steps"].get(step)
        if not s or "wall" not in s:
            continue
        s["launch"] = s["wall"] - s["import_s"] - s["tracking_s"] - s["work_s"]
        s["plain"] = plain["times"].get(step, 0.0)
        s["fresh"] = fresh["steps"].get(step, {}).get("wall", 0.0)
        for key in totals:
            totals[key] += s[key]
        print(
            f"{step:24}{s['wall']:8.1f}{s['import_s']:8.1f}{s['tracking_s']:9.1f}"
            f"{s['work_s']:8.1f}{s['launch']:8.1f}{s['fresh']:8.1f}{s['plain']:8.1f}"
        )
    totals["plain"] += plain["times"]["import"]
    print(
        f"{'total':24}{totals['wall']:8.1f}{totals['import_s']:8.1f}"
        f"{totals['tracking_s']:9.1f}{totals['work_s']:8.1f}{totals['launch']:8.1f}"
        f"{totals['fresh']:8.1f}{totals['plain']:8.1f}"
    )
    print(
        f"(plain import of TensorFlow/Keras/KerasTuner once: {plain['times']['import']:.1f} s; "
        f"CLI start and summary outside the steps: {kf['wall'] - totals['wall']:.1f} s)"
    )


def fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


if __name__ == "__main__":
    main()
