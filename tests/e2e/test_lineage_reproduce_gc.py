"""Lineage, reproduction and retention around real runs: three tiny runs of one model on a CSV
file, then `kerasflow lineage` names every link, `kerasflow reproduce` gets the same test
metrics without touching the champion and refuses changed data, and `kerasflow gc` keeps the
champion and the served version and deletes the rest."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kerasflow import __version__
from kerasflow.serving import request_log
from tests.e2e.cli import kerasflow

# Two runs and a reproduction are made before the first test: more than the default 900 s on
# a busy machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

MODEL = "iris-lineage"


def tracking_client(work: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri="sqlite:///" + str(work / "mlflow.db"))


@pytest.fixture(autouse=True)
def _work_dir_store(monkeypatch):
    """Every command here uses the store in WORK_DIR, where the runs tracked, not the test's
    own MLFLOW_TRACKING_URI."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of the same tiny pipeline on iris.csv, each blessed and deployed, and a
    reproduction of the second that is asked to deploy: serving versions 1, 2 and 3."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        return make_runs(tmp_path_factory.mktemp("lineage"))


def make_runs(root: Path) -> dict:
    """The runs of the `runs` fixture, made in `root`."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    frame = iris.frame.assign(species=[iris.target_names[t] for t in iris.target])
    frame.drop(columns="target").to_csv(root / "iris.csv", index=False)
    summaries = []
    for i in range(2):
        proc = kerasflow(
            "run", "--data", str(root / "iris.csv"), "--label", "species",
            "--tuner", "random", "--max-trials", "1", "--max-epochs", "2",
            "--final-epochs", "3", "--threshold", "accuracy=0.0", "--champion-tolerance", "1.0",
            "--model-name", MODEL, "--work-dir", "work", "--summary-json", f"run{i}.json",
            cwd=root,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        summaries.append(json.loads((root / f"run{i}.json").read_text()))
    deployed = kerasflow(
        "reproduce", summaries[1]["mlflow_run_id"], "--deploy", "--work-dir", "work", "--json",
        cwd=root,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
    report = json.loads(deployed.stdout)
    assert [s["model_version"] for s in summaries] + [report["deployed_version"]] == [1, 2, 3]
    return {"root": root, "work": root / "work", "summaries": summaries, "reproduction": report}


def test_lineage_names_every_link_from_the_served_version_to_data_and_code(runs):
    root, last = runs["root"], runs["summaries"][-1]
    proc = kerasflow(
        "lineage", "--model-name", MODEL, "--version", "2", "--work-dir", "work", "--json",
        cwd=root,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    trace = json.loads(proc.stdout)
    assert trace["serving"]["version"] == 2
    assert trace["serving"]["path"] == last["model_path"]
    assert len(trace["serving"]["export_digest"]) == 64
    assert trace["registry"]["version"] == 2 and trace["registry"]["source"].startswith("models:/")
    assert trace["pipeline_run"]["id"] == last["mlflow_run_id"]
    assert trace["pipeline_run"]["status"] == "FINISHED"
    client = tracking_client(runs["work"])
    train_run = client.get_run(trace["train_run"])
    assert train_run.data.tags["kerasflow.step"] == "train"
    assert trace["registry"]["train_run"] == trace["train_run"]
    assert trace["kfp_run"]["id"] and trace["kfp_run"]["pipeline"] == "kerasflow-training"
    assert trace["data"]["source"] == str(root / "iris.csv")
    assert len(trace["data"]["digest"]) == 16
    assert trace["data"]["schema"].startswith("runs:/") and trace["data"]["schema"].endswith(
        "schema.json"
    )
    assert trace["code"]["kerasflow"] == __version__
    assert trace["code"]["git_commit"]  # the tests run from a checkout
    assert trace["hyperparameters"] == last["best_hyperparameters"]
    assert trace["augmentation"]["augment_factor"] == 1
    assert trace["seed"] == 42
    assert trace["test_metrics"] == pytest.approx(last["test_metrics"])
    # the reproduction deployed as version 3 names the run it reproduces
    third = kerasflow(
        "lineage", "--model-name", MODEL, "--version", "3", "--work-dir", "work", "--json",
        cwd=root,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr
    reproduced = json.loads(third.stdout)
    assert reproduced["pipeline_run"]["id"] == runs["reproduction"]["reproduction_run"]
    assert reproduced["reproduces"] == last["mlflow_run_id"]
    assert reproduced["hyperparameters"] == trace["hyperparameters"]
    assert reproduced["data"]["digest"] == trace["data"]["digest"]
    assert reproduced["deterministic"] is True and trace["deterministic"] is False
    # the same chain as text: one named line per link
    text = kerasflow(
        "lineage", "--model-name", MODEL, "--version", "2", "--work-dir", "work", cwd=root
    )
    for label in (
        "serving version", "registry version", "train run", "pipeline run", "KFP run",
        "data source", "data digest", "schema", "code", "hyperparameters", "augmentation",
    ):  # fmt: skip
        assert any(line.startswith(label) for line in text.stdout.splitlines()), label
    assert "(not recorded)" not in text.stdout
    # backwards: every version trained on that digest
    found = kerasflow(
        "lineage", "--data-digest", trace["data"]["digest"], "--work-dir", "work", "--json",
        cwd=root,
    )  # fmt: skip
    assert found.returncode == 0, found.stderr
    listed = json.loads(found.stdout)
    assert [v["registry_version"] for v in listed["versions"]] == [1, 2, 3]
    assert len(listed["pipeline_runs"]) >= 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-name", "no-such-model"], "no registered model named 'no-such-model'"),
        (["--model-name", MODEL, "--version", "99"], f"model '{MODEL}' has no registered serving"),
    ],
)
def test_lineage_of_a_missing_model_or_version_is_one_line_and_exit_2(runs, args, message):
    proc = kerasflow("lineage", *args, "--work-dir", "work", cwd=runs["root"])
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("kerasflow: error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_reproduce_matches_the_original_metrics_and_leaves_the_champion_alone(runs):
    root, last = runs["root"], runs["summaries"][0]
    client = tracking_client(runs["work"])
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    config = (runs["work"] / "models" / "models.config").read_text()
    proc = kerasflow("reproduce", last["mlflow_run_id"], "--work-dir", "work", "--json", cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    accuracy = next(r for r in report["metrics"] if r["metric"] == "accuracy")
    print(f"original accuracy {accuracy['original']}, reproduced {accuracy['reproduced']}")
    assert abs(accuracy["reproduced"] - accuracy["original"]) <= 0.005
    assert report["reproduced"] is True and report["same_data"] is True
    assert report["best_hyperparameters"] == last["best_hyperparameters"]
    assert report["deployed_version"] is None
    # nothing was published: the champion, the serving config and the versions are unchanged
    assert client.get_model_version_by_alias(MODEL, "champion").version == champion
    assert (runs["work"] / "models" / "models.config").read_text() == config
    assert not (runs["work"] / "models" / MODEL / "4").exists()
    rerun = client.get_run(report["reproduction_run"])
    assert rerun.data.tags["kerasflow.reproduces"] == last["mlflow_run_id"]
    assert (
        json.loads(rerun.data.tags["kerasflow.best_hyperparameters"])
        == (last["best_hyperparameters"])
    )


def test_reproduce_refuses_when_the_data_file_changed(runs):
    root = runs["root"]
    data = root / "iris.csv"
    original = data.read_text()
    try:
        lines = original.splitlines()
        data.write_text("\n".join(lines[:-10]) + "\n")
        proc = kerasflow(
            "reproduce", runs["summaries"][0]["mlflow_run_id"], "--work-dir", "work", cwd=root
        )
    finally:
        data.write_text(original)
    assert proc.returncode == 2
    assert "changed since pipeline run" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_gc_keeps_the_champion_and_the_served_version_and_deletes_the_rest(runs):
    root, work = runs["root"], runs["work"]
    models = work / "models" / MODEL
    rolled = kerasflow(
        "rollback", "--model-name", MODEL, "--to", "1", "--work-dir", "work", cwd=root
    )
    assert rolled.returncode == 0, rolled.stderr
    logs = root / "request-logs"
    now = datetime.now(UTC)
    old_log = request_log.file_name(now - timedelta(days=10), 1, 1)
    new_log = request_log.file_name(now - timedelta(hours=1), 1, 2)
    for name in (old_log, new_log):
        (logs / MODEL).mkdir(parents=True, exist_ok=True)
        (logs / MODEL / name).write_text("{}\n")
    roots_before = [p for p in (work / "pipeline_root").iterdir() if p.name != "tuning"]
    assert len(roots_before) >= 2
    common = ["--keep", "1", "--work-dir", "work", "--request-log", str(logs), "--log-days", "7"]
    dry = kerasflow("gc", *common, "--dry-run", cwd=root)
    assert dry.returncode == 0, dry.stderr
    assert f"would delete serving version {MODEL}/2" in dry.stdout
    assert (models / "2").is_dir() and (logs / MODEL / old_log).exists()
    done = kerasflow("gc", *common, "--json", cwd=root)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    kept = {(d["kind"], d["name"]): d["reason"] for d in report["kept"]}
    deleted = {(d["kind"], d["name"]) for d in report["deleted"]}
    assert kept[("serving version", f"{MODEL}/1")] == "champion"
    assert kept[("serving version", f"{MODEL}/3")] == "among the newest 1"
    assert ("serving version", f"{MODEL}/2") in deleted
    assert ("registry version", f"{MODEL} v2") in deleted
    assert sorted(p.name for p in models.iterdir() if p.name.isdigit()) == ["1", "3"]
    client = tracking_client(work)
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{MODEL}'")) == [1, 3]
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert "specific" in (work / "models" / "models.config").read_text()
    assert not (logs / MODEL / old_log).exists() and (logs / MODEL / new_log).exists()
    roots_after = [p for p in (work / "pipeline_root").iterdir() if p.name != "tuning"]
    assert len(roots_after) == 1 and roots_after[0] == max(roots_before, key=lambda p: p.name)
    # the champion still serves: lineage of the champion resolves every link
    trace = kerasflow("lineage", "--model-name", MODEL, "--work-dir", "work", "--json", cwd=root)
    assert trace.returncode == 0, trace.stderr
    assert json.loads(trace.stdout)["serving"]["served"] is True
