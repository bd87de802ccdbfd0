"""Every source format and location: delimited text, Parquet, JSON Lines, .npz, class folders,
local and gs:// (against an in-process GCS emulator)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kerasflow.data.sources import check_source, read_source

pytestmark = pytest.mark.unit
pytest_plugins = ["tests.gcs_emulator"]


def small_table(n=30):
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "height": rng.normal(170, 10, n).round(1),
            "city": rng.choice(["Oslo", "Lima"], n),
            "label": rng.choice(["a", "b"], n),
        }
    )


@pytest.mark.parametrize(
    ("name", "sep"), [("t.csv", ","), ("t.tsv", "\t"), ("semi.csv", ";"), ("pipe.txt", "|")]
)
def test_delimited_text_is_sniffed(tmp_path, name, sep):
    path = tmp_path / name
    small_table().to_csv(path, sep=sep, index=False)
    check_source(str(path), "label")
    raw = read_source(str(path), "label")
    assert list(raw.frame.columns) == ["height", "city", "label"]
    assert len(raw.frame) == 30 and raw.modality == "tabular"


def test_windows_encoded_csv_is_read(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("name,label\nJosé,a\nZoë,b\n".encode("cp1252"))
    raw = read_source(str(path), "label")
    assert raw.frame["name"].tolist() == ["José", "Zoë"]


def test_parquet_and_json_lines(tmp_path):
    frame = small_table()
    frame.to_parquet(tmp_path / "t.parquet")
    frame.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    for name in ("t.parquet", "t.jsonl"):
        check_source(str(tmp_path / name), "label")
        raw = read_source(str(tmp_path / name), "label")
        assert raw.frame["height"].dtype == float
        assert raw.frame["city"].tolist() == frame["city"].tolist()


def test_npz_tables_images_and_text(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "table.npz", x=rng.random((20, 3)), y=np.arange(20) % 2)
    np.savez(tmp_path / "images.npz", x=rng.random((20, 6, 6)), y=np.arange(20) % 2)
    np.savez(tmp_path / "text.npz", x=np.array(["good film"] * 20), y=np.arange(20) % 2)
    table = read_source(str(tmp_path / "table.npz"))
    assert table.modality == "tabular" and list(table.frame.columns) == ["f0", "f1", "f2", "label"]
    images = read_source(str(tmp_path / "images.npz"))
    assert images.modality == "image" and images.x.shape == (20, 6, 6, 1)
    text = read_source(str(tmp_path / "text.npz"))
    assert text.modality == "text" and text.text_column == "text"


def write_image_tree(root, sizes=((8, 8),), modes=("L",), per_class=4):
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            h, w = sizes[i % len(sizes)]
            mode = modes[i % len(modes)]
            shape = (h, w, 3) if mode == "RGB" else (h, w)
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(
                root / cls / f"{i}.png"
            )


def test_image_folder_resizes_mixed_sizes_to_the_most_common(tmp_path):
    write_image_tree(tmp_path / "imgs", sizes=((8, 8), (8, 8), (12, 10)))
    raw = read_source(str(tmp_path / "imgs"))
    assert raw.modality == "image" and raw.class_names == ["cat", "dog"]
    assert raw.x.shape == (8, 8, 8, 1) and list(raw.y) == [0] * 4 + [1] * 4
    assert any("resized 2 image(s) to 8x8" in w for w in raw.warnings)
    sized = read_source(str(tmp_path / "imgs"), image_size=(16, 12))
    assert sized.x.shape == (8, 16, 12, 1)


def test_image_folder_converts_mixed_modes_to_rgb(tmp_path):
    write_image_tree(tmp_path / "imgs", modes=("L", "RGB"))
    raw = read_source(str(tmp_path / "imgs"))
    assert raw.x.shape[-1] == 3
    assert any("converted 4 grayscale image(s) to RGB" in w for w in raw.warnings)


def test_text_folder_and_text_column_are_text(tmp_path):
    for cls, words in (("neg", "dull slow boring"), ("pos", "great fun moving")):
        (tmp_path / "reviews" / cls).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "reviews" / cls / f"{i}.txt").write_text(f"a {words} story number {i}")
    raw = read_source(str(tmp_path / "reviews"))
    assert raw.modality == "text" and raw.class_names == ["neg", "pos"]
    assert raw.frame["class"].tolist() == ["neg"] * 3 + ["pos"] * 3
    frame = pd.DataFrame(
        {"review": [f"this film was really quite good {i}" for i in range(20)], "y": [0, 1] * 10}
    )
    frame.to_csv(tmp_path / "reviews.csv", index=False)
    assert read_source(str(tmp_path / "reviews.csv"), "y").text_column == "review"
    tabular = read_source(str(tmp_path / "reviews.csv"), "y", modality="tabular")
    assert tabular.modality == "tabular"


def test_gs_files_and_folders_are_read_through_the_emulator(tmp_path, gcs):
    small_table().to_csv(tmp_path / "t.csv", index=False)
    write_image_tree(tmp_path / "imgs")
    csv_uri = gcs.upload(tmp_path / "t.csv", "data/t.csv")
    folder_uri = gcs.upload(tmp_path / "imgs", "data/imgs")
    check_source(csv_uri, "label")
    assert len(read_source(csv_uri, "label").frame) == 30
    assert read_source(folder_uri).x.shape == (8, 8, 8, 1)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"version": 1}))
    check_source(csv_uri, "label", schema=gcs.upload(schema, "s/schema.json"))
