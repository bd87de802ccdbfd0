"""Transfer learning against training from scratch on a small image set.

A MobileNetV2 base (alpha 0.35, 32x32) is pretrained on digits 0-4 and saved; then
`kerasflow run` learns digits 5-9 (50 rows per class) twice with the same search and fit
budgets: once over that base (`--base-model mobilenet_v2 --base-weights base.keras`), once
from scratch with the default image model. Prints both test accuracies and the margin.

Usage:
    python benchmarks/transfer.py [--pretrain-epochs 4] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.transfer_fixtures import BASE_FILE, TARGET_FILE, make_digits_transfer  # noqa: E402

BUDGET = ["--tuner", "random", "--max-trials", "2", "--max-epochs", "4"]
BUDGET += ["--final-epochs", "12", "--seed", "1", "--threshold", "accuracy=0.0"]


def run(work: Path, *extra: str) -> tuple[float, float]:
    """Test accuracy and seconds of one `kerasflow run` into `work`."""
    summary = work / "summary.json"
    started = time.time()
    cmd = [sys.executable, "-m", "kerasflow.pipelines.cli", "run", *BUDGET, *extra]
    cmd += ["--work-dir", str(work), "--summary-json", str(summary)]
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    accuracy = json.loads(summary.read_text())["test_metrics"]["accuracy"]
    return float(accuracy), time.time() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--work", default="")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="kerasflow-transfer-"))
    data = make_digits_transfer(work / "data", epochs=args.pretrain_epochs)
    target = ["--data", str(data / TARGET_FILE)]
    base = ["--base-model", "mobilenet_v2", "--base-weights", str(data / BASE_FILE)]
    transfer, t_s = run(work / "transfer", *target, *base, "--fine-tune-epochs", "4")
    scratch, s_s = run(work / "scratch", *target)
    print(f"transfer (base pretrained on digits 0-4): accuracy {transfer:.4f} ({t_s:.0f} s)")
    print(f"from scratch (default image model):       accuracy {scratch:.4f} ({s_s:.0f} s)")
    print(f"margin (transfer - scratch): {transfer - scratch:+.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
