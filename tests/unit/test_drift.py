"""Drift tests of kerasflow.monitoring on small data made here: each kind of feature, the
correction across features, the reference a split records and reading a request log."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.data import artifacts
from kerasflow.monitoring import current, drift, report
from kerasflow.monitoring import reference as R
from kerasflow.runtime.errors import UserError
from kerasflow.serving import request_log

pytestmark = pytest.mark.unit

WORDS = "the cat sat on a mat with some dog and bird near our house today".split()  # noqa: SIM905


def table_bundle(rng: np.random.Generator, n: int = 600):
    frame = pd.DataFrame(
        {
            "x": rng.normal(0, 1, n),
            "y": rng.normal(5, 2, n),
            "city": rng.choice(["paris", "rome", "oslo"], n, p=[0.5, 0.3, 0.2]),
            "note": [" ".join(rng.choice(WORDS, 6)) for _ in range(n)],
            "label": rng.integers(0, 2, n),
        }
    )
    meta = {
        C.META_MODALITY: "text",
        C.META_TASK: "classification",
        C.META_LABEL: "label",
        C.META_CLASS_NAMES: ["no", "yes"],
        C.META_FEATURES: [
            {"name": "x", "input": "x", "kind": "numeric"},
            {"name": "y", "input": "y", "kind": "numeric"},
            {"name": "city", "input": "city", "kind": "categorical"},
            {"name": "note", "input": "text", "kind": "text"},
        ],
    }
    part = artifacts.Part(frame=frame)
    return meta, part.take(np.arange(400)), part.take(np.arange(400, n))


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    meta, train, val = table_bundle(rng)
    return R.build_reference(meta, train, val), rng


def fresh(rng: np.random.Generator, n: int = 500) -> dict[str, np.ndarray]:
    _, part, _ = table_bundle(rng, max(n, 400) + 200)
    frame = part.frame.iloc[:n]
    labels = np.asarray(["no", "yes"], dtype=object)[frame["label"].to_numpy()]
    return {c: frame[c].to_numpy() for c in ("x", "y", "city", "note")}, labels


def test_data_from_the_same_distribution_do_not_drift(table):
    reference, rng = table
    columns, labels = fresh(rng)
    result = drift.run_tests(reference, drift.Current(columns, labels=labels, rows=500))
    assert not result.drifted, report.table(result)
    names = {t.name for t in result.tests}
    assert names == {"x", "y", "city", "note:oov_share", "label"}


def test_a_scaled_number_drifts_alone(table):
    reference, rng = table
    columns, _ = fresh(rng)
    columns["y"] = columns["y"] * 3
    result = drift.run_tests(reference, drift.Current(columns, rows=500))
    assert result.drifted_features == ["y"]
    (y,) = [t for t in result.tests if t.name == "y"]
    assert y.test == "ks" and y.p_adjusted < 1e-6 and y.effect_value > 1.0


def test_new_category_shares_and_unseen_categories_drift(table):
    reference, rng = table
    columns, _ = fresh(rng)
    columns["city"] = np.asarray(["lima"] * 300 + ["rome"] * 200, dtype=object)
    result = drift.run_tests(reference, drift.Current(columns, rows=500))
    assert result.drifted_features == ["city"]
    assert [t.test for t in result.tests if t.name == "city"] == ["chi2"]


def test_unknown_words_drift_as_out_of_vocabulary_share(table):
    reference, rng = table
    columns, _ = fresh(rng)
    columns["note"] = np.asarray(["zebra quantum " + n for n in columns["note"]], dtype=object)
    result = drift.run_tests(reference, drift.Current(columns, rows=500))
    assert result.drifted_features == ["note:oov_share"]
    (oov,) = [t for t in result.tests if t.name == "note:oov_share"]
    assert oov.effect == "oov_increase" and oov.effect_value == pytest.approx(0.25, abs=0.01)


def test_label_shift_is_tested_when_labels_are_given(table):
    reference, rng = table
    columns, _ = fresh(rng)
    labels = np.asarray(["yes"] * 450 + ["no"] * 50, dtype=object)
    result = drift.run_tests(reference, drift.Current(columns, labels=labels, rows=500))
    assert result.drifted_features == ["label"]


def test_a_small_significant_change_is_not_drift_below_the_psi_threshold():
    rng = np.random.default_rng(1)
    ref = rng.normal(0, 1, 1000)
    cur = rng.normal(0.15, 1, 20000)
    test = drift.numeric_test("x", "numeric", ref, cur, drift.DriftOptions())
    drift.correct([test], drift.DriftOptions())
    assert test.p_adjusted < 0.05 and test.effect_value < 0.1 and not test.drifted


def test_bonferroni_is_stricter_than_benjamini_hochberg():
    def tests():
        return [
            drift.FeatureTest(f"f{i}", "numeric", "ks", 0.0, p, "psi", 1.0, 0.1, 100)
            for i, p in enumerate([0.001, 0.01, 0.02, 0.03, 0.5])
        ]

    bh, bonferroni = tests(), tests()
    drift.correct(bh, drift.DriftOptions(correction="bh"))
    drift.correct(bonferroni, drift.DriftOptions(correction="bonferroni"))
    assert [t.drifted for t in bh] == [True, True, True, True, False]
    assert [t.drifted for t in bonferroni] == [True, False, False, False, False]


def image_reference(rng: np.random.Generator):
    x = np.zeros((300, 8, 8, 1), dtype="float32")
    x[:, 2:6, 3:5] = rng.uniform(8, 16, (300, 4, 2, 1))
    meta = {
        C.META_MODALITY: "image",
        C.META_TASK: "classification",
        C.META_LABEL: "digit",
        C.META_CLASS_NAMES: ["0", "1"],
    }
    part = artifacts.Part(x=x, y=rng.integers(0, 2, 300))
    return R.build_reference(meta, part, None), x


def log_images(tmp_path, images: np.ndarray) -> str:
    folder = tmp_path / "log" / "digits"
    folder.mkdir(parents=True)
    lines = "".join(
        request_log.encode_record(
            model="digits", version=1, signature="serving_default", method="predict",
            inputs={"image": img[None]}, outputs={"output_0": np.zeros((1, 2))},
        )
        for img in images
    )  # fmt: skip
    (folder / request_log.file_name(datetime.now(UTC), 1, 0)).write_text(lines)
    return str(tmp_path / "log")


def test_inverted_images_from_a_request_log_drift_on_image_statistics(tmp_path):
    rng = np.random.default_rng(2)
    reference, x = image_reference(rng)
    assert set(reference["images"]["statistics"]) == set(R.IMAGE_STATISTICS)
    same = current.from_requests(log_images(tmp_path / "a", x[:150]), "digits", reference)
    assert same.rows == 150 and same.images.shape == (150, 8, 8, 1)
    assert not drift.run_tests(reference, same).drifted
    inverted = current.from_requests(log_images(tmp_path / "b", 16 - x[:150]), "digits", reference)
    result = drift.run_tests(reference, inverted)
    assert {"image:mean_intensity", "image:bright_share"} <= set(result.drifted_features)
    assert len(result.tests) == 3


def test_too_few_rows_and_missing_features_are_user_errors(table):
    reference, rng = table
    columns, _ = fresh(rng, 10)
    with pytest.raises(UserError, match="10 rows; drift tests need at least 20"):
        drift.run_tests(reference, drift.Current(columns, rows=10, source="tiny.csv"))
    columns, _ = fresh(rng)
    del columns["city"]
    with pytest.raises(UserError, match="lacks the feature"):
        drift.run_tests(reference, drift.Current(columns, rows=500, source="new.csv"))


def test_an_empty_request_log_is_a_user_error(tmp_path):
    reference, _ = image_reference(np.random.default_rng(3))
    with pytest.raises(UserError, match="no logged requests of 'digits'"):
        current.from_requests(str(tmp_path), "digits", reference)


def test_the_reference_is_small_and_loads_back(table):
    reference, _ = table
    import json

    text = json.dumps(reference)
    assert len(text) < 100_000
    assert R.load_reference(text, "x") == reference
    with pytest.raises(UserError, match="not a drift reference"):
        R.load_reference('{"version": 99}', "old.json")


def test_the_html_report_names_the_drifted_feature(table):
    reference, rng = table
    columns, _ = fresh(rng)
    columns["x"] = columns["x"] + 3
    result = drift.run_tests(reference, drift.Current(columns, rows=500, source="new.csv"))
    page = report.render_html(result, "Drift of new.csv")
    assert "Drift in x" in page and "data:image/png;base64," in page
    assert report.metrics(result)["drifted"] == 1.0
    assert "DRIFT" in report.table(result).splitlines()[1]


def test_when_drifted_adds_the_drift_checks_settings_to_the_pipeline_arguments():
    from kerasflow.settings import RunSettings

    assert "drift_check_settings" not in RunSettings().pipeline_arguments()
    cfg = RunSettings.from_values({"when": "drifted", "drift_check": {"min-psi": 0.3}})
    args = cfg.pipeline_arguments()
    assert args["drift_check_settings"] == {
        "alpha": 0.05, "min_psi": 0.3, "min_oov_increase": 0.05, "correction": "bh"
    }  # fmt: skip
    with pytest.raises(UserError, match="unknown when 'sometimes'"):
        RunSettings.from_values({"when": "sometimes"})
    with pytest.raises(UserError, match="'alpha' must be between 0.0 and 1.0"):
        RunSettings.from_values({"drift_check": {"alpha": 2}})


def test_the_drift_check_step_trains_when_there_is_no_champion(tmp_path):
    import mlflow

    from kerasflow.components.drift_check import core

    uri = f"sqlite:///{tmp_path}/store.db"
    drifted = core.run(
        settings={"alpha": 0.01},
        data="builtin:iris",
        model_name="nobody",
        tracking_uri=uri,
        experiment="drift-step",
        kfp_run_id="kfp-1",
        report_path=str(tmp_path / "report.html"),
    )
    assert drifted is True
    assert "has no champion yet" in (tmp_path / "report.html").read_text()
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("drift-step")
    (pipeline,) = client.search_runs([exp.experiment_id], "tags.`kerasflow.kind` = 'pipeline'")
    assert pipeline.data.tags["kerasflow.drifted"] == "true"


def test_a_discrete_number_keeps_its_exact_values_in_the_reference():
    rng = np.random.default_rng(4)
    levels = np.asarray([-0.0446416365069974, 0.0506801187398187])
    frame = pd.DataFrame({"sex": rng.choice(levels, 400), "label": rng.normal(size=400)})
    meta = {
        C.META_MODALITY: "tabular",
        C.META_TASK: "regression",
        C.META_LABEL: "label",
        C.META_FEATURES: [{"name": "sex", "input": "sex", "kind": "numeric"}],
    }
    reference = R.build_reference(meta, artifacts.Part(frame=frame), None)
    assert set(reference["features"]["sex"]["sample"]) == set(levels)
    same = drift.Current({"sex": rng.choice(levels, 300)}, rows=300)
    assert not drift.run_tests(reference, same).drifted
    shifted = drift.Current({"sex": rng.choice(levels, 300, p=[0.9, 0.1])}, rows=300)
    assert drift.run_tests(reference, shifted).drifted_features == ["sex"]
