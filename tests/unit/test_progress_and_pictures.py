"""Progress lines of long work, the console that draws them, the evaluation's pictures and the
inputs `kerasflow predict` reads, without a pipeline or a server."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from kerasflow.components.evaluate import plots
from kerasflow.pipelines.console import FilteredStream, LiveBars
from kerasflow.runtime import progress
from kerasflow.runtime.errors import UserError
from kerasflow.serving import answers, dtypes
from kerasflow.serving.inputs import read_batch
from kerasflow.serving.signature import TensorSpec

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def collect(unit: str, total: int | None, **kwargs) -> tuple[progress.Progress, Clock, list[str]]:
    lines: list[str] = []
    clock = Clock()
    shown = progress.Progress(
        "train", unit, total, emit=lambda step, text: lines.append(text), clock_fn=clock, **kwargs
    )
    return shown, clock, lines


def test_epoch_lines_carry_the_details_elapsed_time_and_estimate():
    shown, clock, lines = collect("epoch", 30)
    clock.now = 10.0
    shown.update(1, "loss 0.5000 val_accuracy 0.8000")
    clock.now = 20.0
    shown.update(2)
    assert lines == [
        "epoch 1/30 loss 0.5000 val_accuracy 0.8000; elapsed 0:00:10, eta 0:04:50",
        "epoch 2/30; elapsed 0:00:20, eta 0:04:40",
    ]
    assert progress.LINE.search(f"[12:00:00] train: {lines[0]}")["total"] == "30"


def test_file_lines_come_once_per_share_and_at_the_end():
    shown, _, lines = collect("files", 95, every=0.1)
    for _ in range(95):
        shown.update()
    assert [line.split(";")[0] for line in lines] == [
        f"files {n}/95" for n in range(10, 91, 10)
    ] + ["files 95/95"]


def test_a_resumed_search_estimates_from_this_process_and_a_deadline_caps_the_estimate():
    import time

    shown, clock, lines = collect("trials", 10, done=4, deadline=time.time() + 30)
    clock.now = 100.0
    shown.update(5)
    assert lines[-1].startswith("trials 5/10; elapsed 0:01:40, eta 0:00:")  # 30 s, not 500 s
    unbounded, clock, lines = collect("trials", None)
    unbounded.update(1)
    assert lines == ["trials 1; elapsed 0:00:00"]


def test_hyperband_plans_the_trials_of_its_brackets():
    import keras_tuner as kt

    from kerasflow.tuning.tuners import planned_trials

    oracle = kt.oracles.HyperbandOracle(objective="val_loss", max_epochs=3, factor=3)
    assert planned_trials(oracle, None) == 6
    assert planned_trials(oracle, 4) == 4
    oracle.deadline = 1.0
    assert planned_trials(oracle, None) is None


def test_on_a_terminal_progress_lines_become_bars_and_leave_their_last_line():
    screen, log = io.StringIO(), io.StringIO()
    bars = LiveBars(screen)
    stream = FilteredStream(screen, log, bars)
    stream.write("[12:00:00] train: fitting up to 3 epochs\n")
    stream.write("[12:00:01] train: epoch 1/3 loss 0.9; elapsed 0:00:01, eta 0:00:02\n")
    stream.write("[12:00:02] train: epoch 2/3 loss 0.5; elapsed 0:00:02, eta 0:00:01\n")
    (task,) = bars.progress.tasks
    details = "loss 0.5; elapsed 0:00:02, eta 0:00:01"  # the step's own estimate
    assert (task.completed, task.total, task.fields["details"]) == (2, 3, details)
    stream.write("Task 'train' finished with status SUCCESS\n")
    assert not bars.progress.tasks
    text = screen.getvalue()
    assert "fitting up to 3 epochs" in text and "epoch 2/3 loss 0.5" in text
    assert "epoch 1/3" in log.getvalue()


def test_piped_output_keeps_the_compact_lines():
    screen, log = io.StringIO(), io.StringIO()
    stream = FilteredStream(screen, log)
    stream.write("[12:00:01] train: epoch 1/3 loss 0.9; elapsed 0:00:01, eta 0:00:02\nnoise\n")
    assert (
        screen.getvalue() == "[12:00:01] train: epoch 1/3 loss 0.9; elapsed 0:00:01, eta 0:00:02\n"
    )


@pytest.mark.parametrize("classes", [2, 3])
def test_classification_pictures_and_their_html_page(classes):
    rng = np.random.default_rng(0)
    y = np.arange(60) % classes
    proba = rng.dirichlet(np.ones(classes), size=60)
    proba[np.arange(60), y] += 1.0
    proba /= proba.sum(axis=1, keepdims=True)
    figures = plots.classification_figures(y, proba, [f"c{i}" for i in range(classes)])
    assert list(figures) == ["confusion_matrix.png", "roc_curve.png", "pr_curve.png"]
    page = plots.figures_html(figures, "test")
    assert page.count("data:image/png;base64,") == 3
    assert plots.png_bytes(figures["roc_curve.png"]).startswith(b"\x89PNG")
    plots.close_all(figures)


def test_regression_pictures_show_residuals():
    y = np.linspace(0, 10, 50)
    figures = plots.regression_figures(y, y + np.sin(y))
    assert list(figures) == ["residuals.png", "predicted_vs_actual.png"]
    assert "residual" in figures["residuals.png"].axes[0].get_ylabel().lower()
    plots.close_all(figures)


IMAGE = {"image": TensorSpec("image", dtypes.DT_FLOAT, (None, 8, 8, 1))}
TEXT = {"text": TensorSpec("text", dtypes.DT_STRING, (None, 1))}


def test_images_are_converted_and_resized_as_training_read_them(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (16, 16), (255, 255, 255)).save(folder / "b.png")
    Image.new("L", (8, 8), 10).save(folder / "a.png")
    batch = read_batch(str(folder), IMAGE)
    assert batch.names == ["a.png", "b.png"]
    assert batch.inputs["image"].shape == (2, 8, 8, 1)
    assert batch.inputs["image"][0].max() == 10 and batch.inputs["image"][1].min() == 255
    assert read_batch(str(folder / "b.png"), IMAGE).names == ["b.png"]


def test_text_files_and_rows_with_extra_columns(tmp_path):
    (tmp_path / "one.txt").write_text("  a fine film\n")
    batch = read_batch(str(tmp_path / "one.txt"), TEXT)
    assert batch.inputs["text"].tolist() == [["a fine film"]]
    (tmp_path / "rows.json").write_text(json.dumps([{"text": "x", "id": 1}]))
    assert read_batch(str(tmp_path / "rows.json"), TEXT).inputs["text"].tolist() == [["x"]]
    import pandas as pd

    pd.DataFrame({"text": ["p", "q"], "label": [0, 1]}).to_parquet(tmp_path / "r.parquet")
    assert read_batch(str(tmp_path / "r.parquet"), TEXT).names == ["0", "1"]


def test_a_named_column_feeds_a_text_or_image_model(tmp_path):
    (tmp_path / "reviews.csv").write_text("id,review\n1,a fine film\n2,dull\n")
    batch = read_batch(str(tmp_path / "reviews.csv"), TEXT, column="review")
    assert batch.inputs["text"].tolist() == [["a fine film"], ["dull"]]
    (tmp_path / "pics").mkdir()
    Image.new("L", (8, 8), 7).save(tmp_path / "pics" / "x.png")
    (tmp_path / "pics.csv").write_text("path\npics/x.png\n")
    images = read_batch(str(tmp_path / "pics.csv"), IMAGE, column="path").inputs["image"]
    assert images.shape == (1, 8, 8, 1) and images.max() == 7


@pytest.mark.parametrize(
    ("rows", "column", "specs", "match"),
    [
        ("review\nok\n", "text", TEXT, "has no column 'text' \\(columns: review\\)"),
        ("path\nnope.png\n", "path", IMAGE, "1 image files missing"),
        ("a,b\n1,2\n", "a", {"a": TEXT["text"], "b": TEXT["text"]}, "takes table columns"),
    ],
)
def test_a_column_that_cannot_feed_the_model_is_a_user_error(tmp_path, rows, column, specs, match):
    (tmp_path / "t.csv").write_text(rows)
    with pytest.raises(UserError, match=match):
        read_batch(str(tmp_path / "t.csv"), specs, column=column)
    with pytest.raises(UserError, match="--column reads a table"):
        read_batch(str(tmp_path), specs, column=column)


@pytest.mark.parametrize(
    ("name", "specs", "match"),
    [
        ("missing.png", IMAGE, "does not exist"),
        ("notes.txt", IMAGE, "image model takes .png"),
        ("broken.png", IMAGE, "is not an image"),
        ("pic.png", TEXT, "text model takes .txt"),
        ("empty", TEXT, "holds no .txt files"),
    ],
)
def test_inputs_a_model_cannot_take_are_user_errors(tmp_path, name, specs, match):
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    Image.new("L", (8, 8)).save(tmp_path / "pic.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=match):
        read_batch(str(tmp_path / name), specs)


def test_answers_as_a_table_and_as_json():
    answer = {"scores": [0.2, 0.8], "classes": "yes", "class_names": ["no", "yes"]}
    table = answers.render_table([answer], ["a.png"], classified=True)
    assert "a.png" in table and "yes" in table and "0.8000" in table and "no 0.200" in table
    doc = answers.json_document([answer], ["a.png"], classified=True)
    assert doc == {
        "predictions": [
            {"input": "a.png", "class": "yes", "probabilities": {"no": 0.2, "yes": 0.8}}
        ]
    }
    assert "151.5" in answers.render_table([[151.5]], ["0"], classified=False)
