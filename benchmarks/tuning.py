"""Hyperparameter search benchmarks, measured in one run on scikit-learn's digits.

1. algorithms: Hyperband against RandomSearch at the same wall-clock budget: the best
   validation accuracy each reaches and the time until a trial first reaches 0.97.
2. overhead: kerasflow's search (trials tracked as MLflow runs, time budget and NaN guards,
   failure limit, tf.data per batch size) against plain KerasTuner on the same search space,
   seed and trial count; the per-trial cost difference (goal: <= 5%).
3. parallel: the same search with 2 worker processes (chief oracle over gRPC) against 1,
   alternating, the median of each.
4. memory: RSS of the process that ran each of 30 trials, with all trials in one process
   and with a fresh worker every 5 trials (the default).

Every measured search runs in a fresh process, one after the other. Usage:
    python benchmarks/tuning.py [--budget 90] [--only algorithms,overhead,parallel,memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REACH = 0.97


def digits_bundle(path: Path, seed: int = 42) -> Path:
    """Digits as an image bundle: stratified 70/15/15 split, normalization from train only."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from kerasflow.data import artifacts

    digits = load_digits()
    x = digits.images.astype("float32")[..., None]
    y = digits.target.astype("int64")
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.15, stratify=y, random_state=seed)
    train, val = train_test_split(rest, test_size=0.15 / 0.85, stratify=y[rest], random_state=seed)
    meta = {
        "modality": "image",
        "task": "classification",
        "image_shape": [8, 8, 1],
        "class_names": [str(c) for c in range(10)],
        "normalization": {
            "image": {"mean": float(x[train].mean()), "variance": float(x[train].var())}
        },
        "split_sizes": {"train": len(train), "val": len(val), "test": len(test)},
    }
    parts = {
        name: artifacts.Part(x=x[rows], y=y[rows])
        for name, rows in (("train", train), ("val", val), ("test", test))
    }
    artifacts.save(path, artifacts.Bundle(meta, parts))
    return path


def child_kerasflow(cfg: dict) -> dict:
    """One kerasflow search as the search step runs it; per-trial end times and scores."""
    quota, workers = cfg.get("quota", 5), cfg.get("workers", 1)
    if quota or workers > 1:
        from kerasflow.tuning.parallel import warm_forkserver

        warm_forkserver()  # as the step does, before its own TensorFlow import
    import keras  # noqa: F401  (imported before the clock starts, as a step does)
    import keras_tuner  # noqa: F401

    from kerasflow.data.feeds import DataFeed, load_training_arrays
    from kerasflow.tuning import tuners

    parent = ""
    if cfg.get("track"):
        import mlflow

        mlflow.set_tracking_uri(cfg["tracking_uri"])
        mlflow.set_experiment("tuning-benchmark")
        parent = mlflow.start_run().info.run_id
    arrays = load_training_arrays(cfg["data"], cfg["data"])
    started = time.time()
    spec = tuners.SearchSpec(
        algorithm=cfg["algorithm"],
        objective="val_accuracy",
        direction="max",
        max_trials=cfg["max_trials"],
        max_epochs=cfg["max_epochs"],
        patience=3,
        seed=cfg["seed"],
        tuner_dir=cfg["tuner_dir"],
        track=bool(cfg.get("track")),
        deadline=started + cfg["budget"] if cfg.get("budget") else 0.0,
        splits_dir=cfg["data"],
        train_dir=cfg["data"],
        tracking_uri=cfg.get("tracking_uri", ""),
        parent_run_id=parent,
    )
    if quota or workers > 1:
        from kerasflow.tuning.parallel import run_parallel_search

        run_parallel_search(spec, arrays.meta, workers, trials_per_process=quota)
    else:
        tuners.run_search(spec, DataFeed(arrays, cfg["seed"]))
    wall = time.time() - started
    rss = []
    if cfg.get("track"):
        import mlflow

        mlflow.end_run()
        runs = mlflow.MlflowClient().search_runs(
            [mlflow.get_run(parent).info.experiment_id],
            f"tags.mlflow.parentRunId = '{parent}'",
        )
        rss = [(int(r.data.tags["trial_id"]), r.data.metrics.get("rss_mb")) for r in runs]
    return {
        "wall": wall,
        "trials": trial_times(Path(cfg["tuner_dir"]), started),
        "trial_rss": sorted(rss),
        "chief_rss": tuners.rss_mb(),
    }


def trial_times(tuner_dir: Path, started: float) -> list[dict]:
    """(seconds since start when the trial ended, status, score) of every trial, in order."""
    rows = []
    for path in tuner_dir.glob("search/trial_*/trial.json"):
        trial = json.loads(path.read_text())
        rows.append(
            {
                "end": path.stat().st_mtime - started,
                "status": trial["status"],
                "score": trial["score"],
            }
        )
    return sorted(rows, key=lambda r: r["end"])


def child_plain(cfg: dict) -> dict:
    """Plain KerasTuner RandomSearch over the same space, seed and trial count."""
    import keras
    import keras_tuner as kt

    from kerasflow.data.feeds import DataFeed, class_weight_arg, load_training_arrays
    from kerasflow.modeling import builders

    arrays = load_training_arrays(cfg["data"], cfg["data"])
    meta = arrays.meta
    train_ds, val_ds = DataFeed(arrays, cfg["seed"]).datasets(32)
    started = time.time()
    keras.utils.set_random_seed(cfg["seed"])
    tuner = kt.RandomSearch(
        hypermodel=lambda hp: builders.build_model(hp, meta),
        objective=kt.Objective("val_accuracy", "max"),
        max_trials=cfg["max_trials"],
        seed=cfg["seed"],
        directory=cfg["tuner_dir"],
        project_name="search",
        overwrite=True,
    )
    stop = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=3, restore_best_weights=True
    )
    tuner.search(
        train_ds,
        validation_data=val_ds,
        epochs=cfg["max_epochs"],
        callbacks=[stop],
        verbose=0,
        class_weight=class_weight_arg(meta),
    )
    return {"wall": time.time() - started, "trials": trial_times(Path(cfg["tuner_dir"]), started)}


def run_child(kind: str, cfg: dict) -> dict:
    out = Path(tempfile.mkdtemp(prefix="kf-tune-bench-")) / "result.json"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--child-config",
        json.dumps(cfg),
        "--child-out",
        str(out),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{kind} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def base_cfg(data: Path, work: Path, name: str, **kw) -> dict:
    return {
        "data": str(data),
        "tuner_dir": str(work / name),
        "seed": 42,
        "max_trials": 1000,
        "max_epochs": 9,
        "tracking_uri": "sqlite:///" + str(work / "mlflow.db"),
        **kw,
    }


def best_and_reach(trials: list[dict]) -> tuple[float, float | None, int]:
    done = [t for t in trials if t["status"] == "COMPLETED" and t["score"] is not None]
    best = max((t["score"] for t in done), default=float("nan"))
    reach = next((t["end"] for t in done if t["score"] >= REACH), None)
    return best, reach, len(done)


def bench_algorithms(data: Path, work: Path, budget: float) -> None:
    print(f"\n== Hyperband vs RandomSearch, {budget:.0f} s budget each, digits ==")
    found = {}
    for algo in ("hyperband", "random"):
        res = run_child(
            "kerasflow",
            base_cfg(data, work, f"algo-{algo}", algorithm=algo, budget=budget, track=True),
        )
        best, reach, n = best_and_reach(res["trials"])
        found[algo] = (best, reach)
        when = f"{reach:.1f} s" if reach is not None else "never"
        print(
            f"{algo:>9}: {n:3d} trials in {res['wall']:.1f} s, best val_accuracy {best:.4f}, "
            f"first >= {REACH} at {when}"
        )
    (hb, hb_t), (rs, rs_t) = found["hyperband"], found["random"]
    print(f"best val_accuracy hyperband - random: {hb - rs:+.4f}")
    if hb_t and rs_t:
        print(f"time to {REACH}: random / hyperband = {rs_t / hb_t:.2f}x")


def bench_overhead(data: Path, work: Path, trials: int, reps: int) -> None:
    print(
        f"\n== Per-trial overhead: kerasflow against plain KerasTuner, {trials} random trials, "
        f"same space and seed, {reps} alternating repetitions =="
    )
    plain, ours = [], []
    for rep in range(reps):
        cfg = {"algorithm": "random", "max_trials": trials, "max_epochs": 5}
        p = run_child("plain", base_cfg(data, work, f"plain-{rep}", **cfg))
        k = run_child("kerasflow", base_cfg(data, work, f"kf-{rep}", track=True, **cfg))
        plain.append(p["wall"] / trials)
        ours.append(k["wall"] / trials)
        print(f"rep {rep}: plain {plain[-1]:.3f} s/trial, kerasflow {ours[-1]:.3f} s/trial")
    p, k = statistics.median(plain), statistics.median(ours)
    print(
        f"median per trial: plain {p:.3f} s, kerasflow {k:.3f} s, "
        f"overhead {100 * (k / p - 1):+.1f}%"
    )


def bench_parallel(data: Path, work: Path, trials: int, reps: int) -> None:
    print(
        f"\n== Parallel trials: 2 workers against 1, {trials} random trials, "
        f"{os.cpu_count()} cores, {reps} alternating repetitions =="
    )
    walls: dict[int, list[float]] = {1: [], 2: []}
    for rep in range(reps):
        for workers in (1, 2):
            res = run_child(
                "kerasflow",
                base_cfg(
                    data,
                    work,
                    f"par-{workers}-{rep}",
                    algorithm="random",
                    max_trials=trials,
                    max_epochs=5,
                    workers=workers,
                    track=True,
                ),
            )
            walls[workers].append(res["wall"])
        print(
            f"rep {rep}: 1 worker {walls[1][-1]:.1f} s, 2 workers {walls[2][-1]:.1f} s "
            f"({walls[1][-1] / walls[2][-1]:.2f}x)"
        )
    one, two = statistics.median(walls[1]), statistics.median(walls[2])
    print(f"median: 1 worker {one:.1f} s, 2 workers {two:.1f} s, speed-up {one / two:.2f}x")


def bench_memory(data: Path, work: Path) -> None:
    print("\n== Memory: RSS of the process that ran each of 30 tracked trials (MiB) ==")
    for quota, label in (
        (0, "all trials in the search process"),
        (5, "a fresh worker every 5 trials (default)"),
    ):
        cfg = base_cfg(
            data,
            work,
            f"memory-{quota}",
            algorithm="random",
            max_trials=30,
            max_epochs=2,
            track=True,
            quota=quota,
        )
        res = run_child("kerasflow", cfg)
        rss = [r for _, r in res["trial_rss"]]
        shown = ", ".join(f"#{i + 1} {rss[i]:.0f}" for i in (0, 4, 9, 19, 29) if i < len(rss))
        print(
            f"{label}: {shown}; max {max(rss):.0f}; trials 26-30 against 1-5 "
            f"{statistics.mean(rss[-5:]) - statistics.mean(rss[:5]):+.0f} MiB; "
            f"search process peak {res['chief_rss'][1]:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=90.0, help="seconds per algorithm")
    parser.add_argument("--overhead-trials", type=int, default=12)
    parser.add_argument("--overhead-reps", type=int, default=2)
    parser.add_argument("--parallel-trials", type=int, default=10)
    parser.add_argument("--parallel-reps", type=int, default=3)
    parser.add_argument("--only", default="algorithms,overhead,parallel,memory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        cfg = json.loads(args.child_config)
        fn = {"kerasflow": child_kerasflow, "plain": child_plain}
        Path(args.child_out).write_text(json.dumps(fn[args.child](cfg)))
        return
    work = Path(tempfile.mkdtemp(prefix="kf-tune-bench-"))
    data = digits_bundle(work / "digits")
    print(f"kerasflow tuning benchmarks on digits ({os.cpu_count()} cores; work dir {work})")
    chosen = args.only.split(",")
    if "algorithms" in chosen:
        bench_algorithms(data, work, args.budget)
    if "overhead" in chosen:
        bench_overhead(data, work, args.overhead_trials, args.overhead_reps)
    if "parallel" in chosen:
        bench_parallel(data, work, args.parallel_trials, args.parallel_reps)
    if "memory" in chosen:
        bench_memory(data, work)


if __name__ == "__main__":
    main()
