"""`kerasflow run` end to end on messy data of each modality, made in the tests.

Budgets are the smallest that reliably meet the targets on this machine: damaged breast_cancer
(test accuracy >= 0.94), digits as a PNG class-folder tree (>= 0.97), a census-style table with
string categories read from gs:// and deployed to gs:// (served on raw strings, by
`kerasflow serve` from the gs:// serving config too), and a small
text classification set.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.e2e import cli

pytestmark = pytest.mark.e2e
pytest_plugins = ["tests.gcs_emulator"]

TINY = ["--tuner", "random", "--max-trials", "1", "--max-epochs", "3"]


def kerasflow(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return cli.kerasflow("run", *args, cwd=cwd)


def finished(proc: subprocess.CompletedProcess, cwd: Path) -> dict:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((cwd / "s.json").read_text())


def damaged_breast_cancer(path: Path) -> None:
    """breast_cancer with junk strings, NaNs, outliers, duplicates, a constant and an id column."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    rng = np.random.default_rng(0)
    frame = data.frame.drop(columns=["target"]).astype(object)
    frame.insert(0, "patient_id", rng.permutation(np.arange(10000, 10000 + len(frame))))
    frame["clinic"] = "north"
    frame["diagnosis"] = [data.target_names[i] for i in data.target]
    for col in data.feature_names[:10]:
        rows = rng.choice(len(frame), 12, replace=False)
        frame.loc[rows[:4], col] = "n/a"
        frame.loc[rows[4:8], col] = "?"
        frame.loc[rows[8:], col] = np.nan
    for col in data.feature_names[:5]:
        frame.loc[rng.choice(len(frame), 3, replace=False), col] = 1e6
    pd.concat([frame, frame.sample(25, random_state=0)]).to_csv(path, index=False)


def test_a_damaged_breast_cancer_csv_is_cleaned_and_trains(tmp_path):
    damaged_breast_cancer(tmp_path / "messy.csv")
    proc = kerasflow(
        "--data", "messy.csv", "--label", "diagnosis", *TINY, "--final-epochs", "15",
        "--work-dir", "work", "--summary-json", "s.json", cwd=tmp_path,
    )  # fmt: skip
    summary = finished(proc, tmp_path)
    print("test metrics:", summary["test_metrics"])
    assert summary["test_metrics"]["accuracy"] >= 0.94
    assert summary["model_version"] == 1
    report = next((tmp_path / "work" / "pipeline_root").rglob("ingest-clean/report"))
    text = report.read_text()
    assert "| patient_id | identifier (unique per row) |" in text
    assert "| clinic | constant (north) |" in text
    assert "| duplicate_rows | 25 |" in text and "| mean texture | 8 |" in text
    split_report = next((tmp_path / "work" / "pipeline_root").rglob("normalize-split/report"))
    fitted = split_report.read_text()
    assert "## Cleaning fitted on the train split" in fitted
    # The 1e6 values planted in the first five columns are clipped to train-fitted bounds.
    assert "| mean radius | " in fitted and "| clip |" in fitted


def test_digits_as_a_png_class_tree_reach_097(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (img, y) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = tmp_path / "digits" / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(img * 16, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "run.yaml").write_text("patience: 5\n")
    proc = kerasflow(
        "--config", "run.yaml", "--data", "digits", "--tuner", "random", "--max-trials", "2",
        "--max-epochs", "3", "--final-epochs", "30", "--augment-factor", "2",
        "--work-dir", "work", "--summary-json", "s.json", cwd=tmp_path,
    )  # fmt: skip
    summary = finished(proc, tmp_path)
    print("test metrics:", summary["test_metrics"])
    assert summary["test_metrics"]["accuracy"] >= 0.97
    assert "augment: train rows 1257 -> 3771 (rotation, zoom, translation, x2)" in proc.stdout
    assert "ingest_clean: files 1797/1797" in proc.stdout
    # kerasflow predict on a PNG file and on a folder of PNGs, resized as ingest read them
    sevens = tmp_path / "sevens"
    sevens.mkdir()
    for i, img in enumerate(digits.images[digits.target == 7][:6]):
        big = Image.fromarray(np.clip(img * 16, 0, 255).astype(np.uint8)).resize((32, 32))
        big.save(sevens / f"seven-{i}.png")
    one = cli.predict_served(
        tmp_path / "work", "kerasflow-model", "--input", "../sevens/seven-0.png"
    )
    assert one.returncode == 0, one.stderr
    assert "seven-0.png" in one.stdout and "probability" in one.stdout
    assert "oneDNN" not in one.stdout + one.stderr
    many = cli.predict_served(
        tmp_path / "work", "kerasflow-model", "--input", "../sevens", "--json"
    )
    assert many.returncode == 0, many.stderr
    rows = json.loads(many.stdout)["predictions"]
    assert [r["input"] for r in rows] == [f"seven-{i}.png" for i in range(6)]
    assert sum(r["class"] == "7" for r in rows) >= 5
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-4 for r in rows)
    bad = cli.predict_served(tmp_path / "work", "kerasflow-model", "--input", "../run.yaml")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "takes .png .jpg .jpeg .bmp .gif files" in bad.stderr


def census(path: Path, n: int = 900) -> None:
    """A census-style table: string categories, '?' for unknown, gaps and a blank."""
    rng = np.random.default_rng(0)
    edu = rng.choice(["HS-grad", "Bachelors", "Masters", "Doctorate"], n, p=[0.45, 0.3, 0.2, 0.05])
    occ = rng.choice(["Tech-support", "Craft-repair", "Sales", "Exec-managerial", "Other"], n)
    age = rng.integers(18, 75, n).astype(float)
    hours = np.clip(rng.normal(40, 10, n).round(), 5, 99)
    score = (
        0.05 * (age - 40)
        + 0.06 * (hours - 40)
        + np.select([edu == "Bachelors", edu == "Masters", edu == "Doctorate"], [1.2, 2.0, 2.8])
        + (occ == "Exec-managerial") * 1.5
        - 0.8
        + rng.normal(0, 0.6, n)
    )
    frame = pd.DataFrame(
        {
            "age": age,
            "workclass": rng.choice(["Private", "Self-emp", "Federal-gov", "?"], n),
            "education": edu,
            "occupation": occ,
            "hours-per-week": hours,
            "income": np.where(score > 0, ">50K", "<=50K"),
        }
    ).astype(object)
    frame.loc[rng.choice(n, 30, replace=False), "occupation"] = "?"
    frame.loc[rng.choice(n, 20, replace=False), "age"] = np.nan
    frame.loc[rng.choice(n, 10, replace=False), "hours-per-week"] = " "
    frame.to_csv(path, index=False)


def test_string_categories_from_gs_train_and_the_served_model_takes_raw_strings(tmp_path, gcs):
    import tensorflow as tf

    from kerasflow.runtime.fileio import local_copy

    census(tmp_path / "census.csv")
    data = gcs.upload(tmp_path / "census.csv", "in/census.csv")
    serving = f"gs://{gcs.bucket}/models"
    proc = kerasflow(
        "--data", data, "--label", "income", "--serving-dir", serving, *TINY,
        "--final-epochs", "10", "--work-dir", "work", "--summary-json", "s.json", cwd=tmp_path,
    )  # fmt: skip
    summary = finished(proc, tmp_path)
    print("test metrics:", summary["test_metrics"])
    assert summary["test_metrics"]["accuracy"] >= 0.75
    assert summary["model_path"] == f"{serving}/kerasflow-model/1"
    assert "models/kerasflow-model/1/saved_model.pb" in gcs.names("models/")
    rows = {  # a likely high earner, then an unlikely one with categories never seen in training
        "age": [[55.0], [19.0]],
        "workclass": [["Private"], ["Martian-gov"]],
        "education": [["Doctorate"], ["Kindergarten"]],
        "occupation": [["Exec-managerial"], ["?"]],
        "hours_per_week": [[60.0], [10.0]],
    }
    with local_copy(summary["model_path"]) as export:
        serve = tf.saved_model.load(str(export)).signatures["serving_default"]
        request = {k: tf.constant(v, dtype=tf.string if isinstance(v[0][0], str) else tf.float32)
                   for k, v in rows.items()}  # fmt: skip
        proba = serve(**request)["output_0"].numpy()
    assert proba.shape == (2, 2) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert proba[0, 1] > 0.5 > proba[1, 1]  # classes ['<=50K', '>50K'] in sorted order
    # `kerasflow serve` serves what the run pinned in the serving config on gs://.
    instances = [{k: v[i] for k, v in rows.items()} for i in range(2)]
    served = cli.serve_and_predict(
        f"{serving}/models.config", "kerasflow-model", instances, tmp_path
    )
    assert [(s["version"], s["state"]) for s in served["status"]] == [("1", "AVAILABLE")]
    np.testing.assert_allclose(served["predictions"], proba, rtol=1e-5, atol=1e-5)


def test_a_small_text_set_trains_end_to_end_with_text_augmentation(tmp_path):
    rng = np.random.default_rng(0)
    words = {
        "negative": ["dull", "boring", "awful", "clumsy", "tedious", "weak", "bland"],
        "positive": ["great", "wonderful", "moving", "brilliant", "funny", "charming", "superb"],
    }
    filler = ["the", "film", "story", "was", "a", "plot", "cast", "and", "really", "with"]
    for cls, own in words.items():
        (tmp_path / "reviews" / cls).mkdir(parents=True)
        for i in range(120):
            tokens = list(rng.choice(filler, rng.integers(6, 14))) + list(rng.choice(own, 2))
            rng.shuffle(tokens)
            (tmp_path / "reviews" / cls / f"{i}.txt").write_text(" ".join(tokens).capitalize())
    (tmp_path / "synonyms.json").write_text(json.dumps({"great": ["grand"], "film": ["movie"]}))
    proc = kerasflow(
        "--data", "reviews", "--synonyms", "synonyms.json", "--augment-methods",
        "deletion,swap,insertion,synonym", *TINY, "--final-epochs", "10",
        "--work-dir", "work", "--summary-json", "s.json", cwd=tmp_path,
    )  # fmt: skip
    summary = finished(proc, tmp_path)
    print("test metrics:", summary["test_metrics"])
    assert "ingest_clean: 240 rows, text classification" in proc.stdout
    assert "(deletion, swap, insertion, synonym, x1)" in proc.stdout
    assert summary["test_metrics"]["accuracy"] >= 0.8
    assert summary["model_version"] == 1
    review = tmp_path / "review.txt"
    review.write_text("The film was brilliant and the cast superb, a wonderful story.\n")
    answer = cli.predict_served(tmp_path / "work", "kerasflow-model", "--input", str(review))
    assert answer.returncode == 0, answer.stderr
    (line,) = [line for line in answer.stdout.splitlines() if "review.txt" in line]
    assert line.split()[1] == "positive"
