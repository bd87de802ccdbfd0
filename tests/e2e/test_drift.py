"""Drift detection end to end: a served digits model's logged requests, a tabular model's new
data, and `kerasflow run --when drifted` retraining only when the data drifted.

Two models are trained once for the module with a tiny budget (`kerasflow run`); every command
names its tracking store, since each test gets its own MLFLOW_TRACKING_URI.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pytest

from kerasflow.serving import request_log
from tests.e2e.cli import kerasflow

# Training runs under load have taken over 10 minutes; the tier default (900 s) is too short.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

TINY = ["--tuner", "random", "--max-trials", "1", "--max-epochs", "1", "--final-epochs", "2"]
DIGITS, DIABETES = "digits-drift", "diabetes-drift"
REQUESTS = 2000
# A safety net for a loaded CI machine, where a tiny run has taken over 10 minutes.
RUN_TIMEOUT = 1800


def train(root: Path, *args: str) -> list[str]:
    """Trains and deploys a model in `root/work`; returns the flags naming its store."""
    store = ["--work-dir", "work", "--tracking-uri", f"sqlite:///{root}/work/mlflow.db"]
    proc = kerasflow("run", *TINY, *store, *args, cwd=root, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "deployed: version 1" in proc.stdout
    return store


def drift(root: Path, store: list[str], *args: str) -> tuple[int, dict]:
    proc = kerasflow("drift", *store, "--json", *args, cwd=root)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def figures(result: dict) -> dict:
    """Each test's corrected p-value and effect, by name (printed with -s for the record)."""
    out = {
        t["name"]: (round(t["p_adjusted"], 6), t["effect"], round(t["effect_value"], 4))
        for t in result["tests"]
    }
    print(json.dumps(out))
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A digits model served from its run's model directory, and 2,000 of its requests drawn
    from the run's test split, logged as `kerasflow serve` logs them: as they are, and with
    every image inverted (16 - pixel on digits' 0..16 scale, which the model takes as is)."""
    from kerasflow.serving import ModelServer, ServerOptions, load_model_config_file

    root = tmp_path_factory.mktemp("drift-digits")
    store = train(root, "--data", "builtin:digits", "--threshold", "accuracy=0.1",
                  "--model-name", DIGITS)  # fmt: skip
    (test_split,) = (root / "work" / "pipeline_root").rglob("splits/test.npz")
    x = np.load(test_split)["x"]
    picked = x[np.random.default_rng(0).integers(0, len(x), REQUESTS)]
    configs = load_model_config_file(str(root / "work" / "models" / "models.config"))
    options = ServerOptions(models=configs, grpc_port=0, rest_port=0, poll_seconds=0)
    logs = {}
    with ModelServer(options) as server:
        import requests

        for name, images in (("same", picked), ("inverted", 16.0 - picked)):
            url = f"{server.rest_url}/v1/models/{DIGITS}:predict"
            answer = requests.post(url, json={"instances": images.tolist()}, timeout=120)
            assert answer.status_code == 200, answer.text
            logs[name] = write_log(root / f"log-{name}", DIGITS, images, answer.json())
    return root, store, logs


def write_log(log: Path, model: str, images: np.ndarray, answer: dict) -> str:
    """One record per request (one image each), 500 records per file."""
    folder = log / model
    folder.mkdir(parents=True)
    start = datetime(2026, 11, 30, tzinfo=UTC)
    lines = [
        request_log.encode_record(
            model=model, version=1, signature="serving_default", method="predict",
            inputs={"image": image[None]}, outputs={"output_0": np.asarray([prediction])},
            when=start + timedelta(seconds=i),
        )
        for i, (image, prediction) in enumerate(zip(images, answer["predictions"], strict=True))
    ]  # fmt: skip
    for seq in range(0, len(lines), 500):
        name = request_log.file_name(start + timedelta(seconds=seq), 1234, seq)
        (folder / name).write_text("".join(lines[seq : seq + 500]))
    return str(log)


def test_requests_drawn_from_the_test_split_do_not_drift(digits):
    root, store, logs = digits
    code, result = drift(root, store, "--model-name", DIGITS, "--requests", logs["same"],
                         "--report", "same.html")  # fmt: skip
    figures(result)
    assert code == 0
    assert result["current_rows"] == REQUESTS and not result["drifted_features"]
    assert {t["name"] for t in result["tests"]} == {
        "image:mean_intensity", "image:contrast", "image:bright_share"
    }  # fmt: skip
    assert "No drift" in (root / "same.html").read_text()


def test_inverted_images_drift(digits):
    root, store, logs = digits
    code, result = drift(root, store, "--model-name", DIGITS, "--requests", logs["inverted"],
                         "--report", "inverted.html")  # fmt: skip
    found = figures(result)
    assert code == 1
    assert {"image:mean_intensity", "image:bright_share"} <= set(result["drifted_features"])
    assert found["image:mean_intensity"][0] < 1e-6
    page = (root / "inverted.html").read_text()
    assert "Drift in" in page and "data:image/png;base64," in page
    client = mlflow.MlflowClient(tracking_uri=store[-1])
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics["drifted"] == 1.0 and run.data.tags["kerasflow.kind"] == "drift"
    assert run.data.metrics["psi/image_mean_intensity"] >= 0.2


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    """A regression model of diabetes, its data as a CSV, and the same with `bmi` tripled."""
    from sklearn.datasets import load_diabetes

    root = tmp_path_factory.mktemp("drift-diabetes")
    store = train(root, "--data", "builtin:diabetes", "--threshold", "r2=-1000",
                  "--model-name", DIABETES)  # fmt: skip
    frame = load_diabetes(as_frame=True).frame
    frame.to_csv(root / "same.csv", index=False)
    frame.assign(bmi=frame["bmi"] * 3).to_csv(root / "scaled.csv", index=False)
    return root, store


def test_a_tripled_feature_drifts_alone(diabetes):
    root, store = diabetes
    code, same = drift(root, store, "--model-name", DIABETES, "--data", "same.csv")
    figures(same)
    assert code == 0 and not same["drifted_features"]
    code, scaled = drift(root, store, "--model-name", DIABETES, "--data", "scaled.csv")
    found = figures(scaled)
    assert code == 1
    assert scaled["drifted_features"] == ["bmi"]
    assert set(found) == {"age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "label"}


def test_bad_input_is_one_line_and_exit_code_2(diabetes):
    root, store = diabetes
    proc = kerasflow("drift", *store, "--model-name", "nobody", "--data", "same.csv", cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "kerasflow: error: model 'nobody' has no champion in the registry at " + store[-1]
    )
    proc = kerasflow("drift", *store, "--model-name", DIABETES, "--requests", "nolog", cwd=root)
    assert proc.returncode == 2 and "no logged requests of 'diabetes-drift'" in proc.stderr


def test_a_drift_triggered_run_retrains_only_when_the_data_drifted(diabetes):
    root, store = diabetes
    when = ["run", "--when", "drifted", "--label", "target", "--model-name", DIABETES,
            "--threshold", "r2=-1000", *TINY, *store]  # fmt: skip
    proc = kerasflow(
        *when, "--data", "same.csv", "--summary-json", "same.json", cwd=root, timeout=RUN_TIMEOUT
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((root / "same.json").read_text())
    assert summary["drifted"] is False and summary["test_metrics"] == {}
    assert summary["model_version"] is None
    assert "nothing was retrained" in proc.stdout
    assert "] drift_check: " in proc.stdout and "] train: " not in proc.stdout

    proc = kerasflow(
        *when, "--data", "scaled.csv", "--summary-json", "scaled.json", cwd=root,
        timeout=RUN_TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((root / "scaled.json").read_text())
    assert summary["drifted"] is True and "r2" in summary["test_metrics"]
    assert "] train: " in proc.stdout
    assert "DRIFT" in proc.stdout
