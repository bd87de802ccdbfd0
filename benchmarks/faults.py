"""The fault matrix: every signal at every step, a tracking outage at every step, a full
serving volume and concurrent runs, each around a real `kerasflow run` (the faults tier runs
one of each kind).

For each case it prints one row: the step the fault hit, the exit code, the seconds from the
fault to the exit (the bound), the last console line, whether anything was published, the
processes left behind, the MLflow runs still RUNNING once the run (or, after SIGKILL, a
`kerasflow reconcile` past the lease) ended, and whether a rerun in the same work directory
then succeeded. The last line gives the bound as a ratio of the configured timeout.

Usage: python benchmarks/faults.py [--faults SIGINT,SIGTERM,SIGKILL,outage,full,concurrent]
       [--steps ingest_clean,...] [--tracking-timeout 10] [--lease 10] [--no-rerun]
       [--markdown table.md] [--runner-args "--runner docker --image kerasflow:dev"]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import harness as h  # noqa: E402

SIGNALS = {"SIGINT": signal.SIGINT, "SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


def row(**fields) -> dict:
    print(json.dumps(fields), flush=True)
    return fields


def outcome(run: h.Run, uri: str, serving: Path) -> dict:
    left = h.wait_session_gone(run.proc.pid, 30)
    statuses = h.runs_by_status(uri) if uri else {}
    lines = run.stderr_lines()
    return {
        "last_line": lines[-1][:160] if lines else "",
        "published": h.published(serving),
        "processes_left": len(left),
        "running_runs": len(statuses.get("RUNNING", [])),
    }


def rerun_ok(work: Path, *args: str) -> bool:
    """Whether a rerun in the same work directory succeeds (its last line is kept if not)."""
    again = h.start_run(work, "--work-dir", "work", *args, tag="rerun")
    code, _ = again.finish(900)
    if code != 0:
        lines = again.stderr_lines()
        print(json.dumps({"rerun_failed": lines[-1][:300] if lines else code}), flush=True)
    return code == 0


def signal_case(name: str, step: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="kf-fault-") as tmp:
        work = Path(tmp)
        common = ["--run-lease", str(args.lease), *args.run_args]
        run = h.start_run(work, "--work-dir", "work", *common)
        run.wait_for(h.step_started(step), 900)
        hit = time.monotonic()
        run.signal(SIGNALS[name], group=name == "SIGINT")
        code, _ = run.finish(600)
        seconds = time.monotonic() - hit
        uri = f"sqlite:///{work / 'work' / 'mlflow.db'}"
        if name == "SIGKILL":
            h.wait_session_gone(run.proc.pid, 30)
            time.sleep(args.lease + 1)
            h.kerasflow(work, "reconcile", "--work-dir", "work")
        facts = outcome(run, uri, work / "work" / "models")
        ok = rerun_ok(work, *common) if args.rerun else None
        return row(
            fault=name, step=step, exit=code, seconds=round(seconds, 1), rerun_ok=ok, **facts
        )


def outage_case(step: str, args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="kf-outage-") as tmp:
        work = Path(tmp)
        server = h.TrackingServer(work / "server")
        try:
            server.start_database()
            server.start()
            common = ["--tracking-uri", server.uri, "--tracking-timeout", str(args.timeout)]
            common += ["--run-lease", str(args.lease), *args.run_args]
            run = h.start_run(work, "--work-dir", "work", *common)
            run.wait_for(h.step_started(step), 900)
            hit = time.monotonic()
            server.stop()
            code, _ = run.finish(600)
            seconds = time.monotonic() - hit
            facts = outcome(run, "", work / "work" / "models")
            server.start()
            time.sleep(max(0.0, args.lease + 1 - (time.monotonic() - hit)))
            ok = rerun_ok(work, *common) if args.rerun else None
            facts["running_runs"] = len(h.runs_by_status(server.uri).get("RUNNING", []))
            return row(
                fault="tracking outage",
                step=step,
                exit=code,
                seconds=round(seconds, 1),
                rerun_ok=ok,
                **facts,
            )
        finally:
            server.close()


def full_case(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="kf-full-") as tmp:
        work = Path(tmp)
        full = work / "full"
        why = h.tmpfs(full, "32k")
        if why:
            return row(fault="full serving volume", skipped=why)
        try:
            run = h.start_run(
                work, "--work-dir", "work", "--serving-dir", str(full), *args.run_args
            )
            run.wait_for(h.step_started("deploy"), 900)
            hit = time.monotonic()
            code, _ = run.finish(600)
            facts = outcome(run, f"sqlite:///{work / 'work' / 'mlflow.db'}", full)
            ok = rerun_ok(work) if args.rerun else None
            return row(
                fault="full serving volume",
                step="deploy",
                exit=code,
                seconds=round(time.monotonic() - hit, 1),
                rerun_ok=ok,
                **facts,
            )
        finally:
            h.unmount(full)


def concurrent_case(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="kf-concurrent-") as tmp:
        work = Path(tmp)
        started = time.monotonic()
        runs = [
            h.start_run(
                work, "--work-dir", "work", "--summary-json", f"{t}.json", *args.run_args, tag=t
            )
            for t in ("a", "b")
        ]
        codes = [r.finish(1200)[0] for r in runs]
        versions = sorted(
            json.loads((work / f"{t}.json").read_text())["model_version"]
            for t, c in zip(("a", "b"), codes, strict=True)
            if c == 0
        )
        statuses = h.runs_by_status(f"sqlite:///{work / 'work' / 'mlflow.db'}")
        return row(
            fault="two runs at once",
            step="all",
            exit=max(codes),
            seconds=round(time.monotonic() - started, 1),
            versions=versions,
            running_runs=len(statuses.get("RUNNING", [])),
            published=h.published(work / "work" / "models"),
        )


def markdown(rows: list[dict]) -> str:
    head = "| fault | step | exit | s to exit | deployed | left | RUNNING | rerun |"
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['fault']} | skipped: {r['skipped']} | | | | | | |")
            continue
        lines.append(
            f"| {r['fault']} | {r['step']} | {r['exit']} | {r['seconds']} | "
            f"{r.get('published') or r.get('versions') or 'nothing'} | "
            f"{r.get('processes_left', 0)} | {r.get('running_runs', 0)} | "
            f"{'yes' if r.get('rerun_ok') else ('n/a' if r.get('rerun_ok') is None else 'NO')} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", default="SIGINT,SIGTERM,SIGKILL,outage,full,concurrent")
    parser.add_argument("--steps", default=",".join(h.STEPS))
    parser.add_argument("--tracking-timeout", dest="timeout", type=float, default=10.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--no-rerun", dest="rerun", action="store_false")
    parser.add_argument("--markdown", default="")
    parser.add_argument(
        "--runner-args",
        dest="run_args",
        default="",
        type=lambda text: text.split(),
        help='extra `kerasflow run` flags, e.g. "--runner docker --image kerasflow:dev"',
    )
    args = parser.parse_args()
    faults = args.faults.split(",")
    steps = args.steps.split(",")
    rows: list[dict] = []
    for name in (f for f in faults if f in SIGNALS):
        rows += [signal_case(name, step, args) for step in steps]
    if "outage" in faults:
        why = h.TrackingServer.available()
        if why:
            rows.append(row(fault="tracking outage", skipped=why))
        else:
            rows += [outage_case(step, args) for step in steps]
    if "full" in faults:
        rows.append(full_case(args))
    if "concurrent" in faults:
        rows.append(concurrent_case(args))
    table = markdown(rows)
    print(table)
    bounded = [r["seconds"] for r in rows if r.get("fault") == "tracking outage" and "seconds" in r]
    if bounded:
        print(
            f"tracking outage: worst time to exit {max(bounded):.1f} s = "
            f"{max(bounded) / args.timeout:.1f} x the tracking timeout ({args.timeout:.0f} s)"
        )
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
