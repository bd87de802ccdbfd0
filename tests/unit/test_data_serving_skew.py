"""No train/serve skew: the exported model takes raw rows (strings included) and answers exactly
what the training-time preprocessing, written out by hand from the bundle metadata, gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.components.ingest_clean import core as ingest
from kerasflow.components.normalize_split import core as split
from kerasflow.data import artifacts, textprep
from kerasflow.data.sources import RawData
from kerasflow.modeling import builders
from kerasflow.settings import SplitSettings

pytestmark = pytest.mark.unit


def raw_rows(n=120, seed=0):
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "income": rng.lognormal(10, 0.5, n).round(2).astype(object),
            "age": rng.integers(18, 80, n).astype(object),
            "city": rng.choice(["Oslo", "Lima", "Pune"], n).astype(object),
            "plan": rng.choice(["basic", "pro", None], n),
            "churn": rng.choice(["no", "yes"], n),
        }
    )
    frame.loc[3, "income"] = "n/a"
    frame.loc[4, "income"] = 5e7  # an outlier: clipped in cleaning and in the served model
    return frame


def hand_features(meta: dict, rows: pd.DataFrame) -> np.ndarray:
    """The preprocessing as the metadata defines it: clip, scale, one-hot (index 0 = unknown)."""
    stats = meta[C.META_NORMALIZATION]
    numeric = [f for f in meta[C.META_FEATURES] if f["kind"] == "numeric"]
    plain = [f for f in numeric if "clip" not in stats[f["input"]]]
    clipped = [f for f in numeric if "clip" in stats[f["input"]]]
    columns = []
    for feat in plain + clipped:
        s = stats[feat["input"]]
        values = rows[feat["name"]].to_numpy(dtype="float64")
        if "clip" in s:
            values = np.clip(values, *s["clip"])
        columns.append(((values - s["mean"]) / np.sqrt(s["variance"]))[:, None])
    for feat in meta[C.META_FEATURES]:
        if feat["kind"] == "categorical":
            vocab = stats[feat["input"]]["vocabulary"]
            index = [1 + vocab.index(v) if v in vocab else 0 for v in rows[feat["name"]]]
            columns.append(np.eye(len(vocab) + 1)[index])
    return np.concatenate(columns, axis=1)


def test_served_raw_rows_match_the_training_time_preprocessing(tmp_path):
    import keras
    import tensorflow as tf

    data, _ = ingest.build_bundle(RawData(frame=raw_rows(), label="churn"))
    result = split.split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0))
    meta = result.meta
    assert "income" in meta["clip_bounds"]
    keras.utils.set_random_seed(0)
    inputs, x = builders.build_inputs(meta)
    head = keras.layers.Dense(2, activation="softmax", name="output")
    model = keras.Model(inputs, head(x))
    model.compile("adam", "sparse_categorical_crossentropy")
    train = result.parts["train"]
    model.fit(
        builders.make_dataset(
            artifacts.model_inputs(meta, train), artifacts.targets(meta, train), 16
        ),
        epochs=1,
        verbose=0,
    )
    model.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export")).signatures[C.SERVING_SIGNATURE]

    # Raw rows as a client sends them: unseen categories and an out-of-range number included.
    rows = pd.DataFrame(
        {
            "income": [25000.0, 9e9, 31000.5],
            "age": [30.0, 61.0, 45.0],
            "city": ["Oslo", "Tromsø", "Pune"],
            "plan": ["pro", "basic", "enterprise"],
        }
    )
    request = {
        f["input"]: tf.constant(
            rows[f["name"]].to_numpy("float32" if f["kind"] == "numeric" else object)[:, None]
        )
        for f in meta[C.META_FEATURES]
    }
    got = served(**request)[C.SERVING_OUTPUT].numpy()
    weights, bias = head.get_weights()
    logits = hand_features(meta, rows) @ weights + bias
    want = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # and the Keras model on the bundle's own inputs agrees with the export on the test split
    test = result.parts["test"]
    keras_out = model.predict(
        builders.make_dataset(
            artifacts.model_inputs(meta, test), artifacts.targets(meta, test), 64
        ),
        verbose=0,
    )
    test_request = {k: tf.constant(v) for k, v in artifacts.model_inputs(meta, test).items()}
    np.testing.assert_allclose(
        served(**test_request)[C.SERVING_OUTPUT].numpy(), keras_out, atol=1e-5
    )
    # Junk, empty and space-padded categories are cleaned as ingest cleaned the training rows:
    # stripped, and missing ones become the train split's most frequent category.
    names = {f["name"]: f["input"] for f in meta[C.META_FEATURES]}
    fill = meta[C.META_NORMALIZATION][names["plan"]]["fill"]
    train_plans = result.parts["train"].frame["plan"]
    assert fill == train_plans.value_counts().idxmax()

    def answer(cities, plans):
        request[names["city"]] = tf.constant(np.array(cities, dtype=object)[:, None])
        request[names["plan"]] = tf.constant(np.array(plans, dtype=object)[:, None])
        return served(**request)[C.SERVING_OUTPUT].numpy()

    np.testing.assert_allclose(
        answer(["  Lima", "Oslo", "Pune "], [" pro ", "N/A", ""]),
        answer(["Lima", "Oslo", "Pune"], ["pro", fill, fill]),
        atol=1e-6,
    )


# Words the train split holds, and requests that spell them differently: case (ASCII and not),
# punctuation against accented letters, a no-break space (French typography) and Unicode spaces.
TRAIN_TEXTS = [
    "The film was GREAT!",
    "a dull, dull film...",
    "it's fine; really",
    "École, ÉTÉ: à Zürich.",
    "STRASSE oder Straße? GROẞE Straße!",
    "Ça ira\u00a0! ÖL",
]
REQUESTS = [
    "Great film, it's dull!",
    "unseen words here",
    "école, ÉTÉ! été... Été",
    "straße STRAßE strasse große",
    "ça\u00a0! zürich\u2003öl",
]


def text_meta() -> dict:
    vocabulary, length = textprep.fit_vocabulary(TRAIN_TEXTS)
    return {
        C.META_MODALITY: "text",
        C.META_NORMALIZATION: {C.TEXT_INPUT: {"vocabulary": vocabulary, "sequence_length": length}},
    }


def text_ids_model(meta: dict):
    import keras

    inputs, ids = builders.build_inputs(meta)
    return keras.Model(inputs, ids)


def expected_ids(vocabulary: list[str], text: str) -> list[int]:
    return [vocabulary.index(t) + 2 if t in vocabulary else 1 for t in textprep.tokenize(text)]


def text_request(texts: list[str]):
    import tensorflow as tf

    return {C.TEXT_INPUT: tf.constant(np.array(texts, dtype=object)[:, None])}


def test_text_vectorization_sees_the_tokens_the_vocabulary_was_fitted_on():
    meta = text_meta()
    vocabulary = meta[C.META_NORMALIZATION][C.TEXT_INPUT]["vocabulary"]
    length = meta[C.META_NORMALIZATION][C.TEXT_INPUT]["sequence_length"]
    for word in ["école", "été", "straße", "strasse", "große", "zürich", "ça", "ira", "öl"]:
        assert word in vocabulary
    model = text_ids_model(meta)
    ids = model.outputs[0]
    assert [i.name for i in model.inputs] == [C.TEXT_INPUT] and ids.shape[1:] == (length,)
    assert str(ids.dtype) == "int64"
    got = model(text_request(REQUESTS)).numpy()
    for row, text in zip(got, REQUESTS, strict=True):
        expected = expected_ids(vocabulary, text)
        assert row[: len(expected)].tolist() == expected and not row[len(expected) :].any()
    # Every word of the non-ASCII requests was seen in training: none is out of vocabulary.
    known = [("école", 4), ("straße", 4), ("ça", 3)]
    for row, (word, count) in zip(got[2:], known, strict=True):
        assert row[0] == vocabulary.index(word) + 2
        assert np.count_nonzero(row) == count and 1 not in row.tolist()


def test_text_vectorization_survives_the_keras_save_and_the_serving_export(tmp_path):
    import tensorflow as tf

    from kerasflow.modeling.export import export_saved_model

    meta = text_meta()
    vocabulary = meta[C.META_NORMALIZATION][C.TEXT_INPUT]["vocabulary"]
    model = text_ids_model(meta)
    model.save(tmp_path / "model.keras")
    reloaded = builders.load_model(tmp_path / "model.keras", compile=False)
    meta = {
        **meta,
        C.META_TASK: "regression",
        C.META_FEATURES: [{"name": "review", "input": C.TEXT_INPUT, "kind": "text"}],
    }
    export_saved_model(model, tmp_path / "export", meta)
    served = tf.saved_model.load(str(tmp_path / "export")).signatures[C.SERVING_SIGNATURE]
    request = text_request(REQUESTS)
    want = model(request).numpy()
    np.testing.assert_array_equal(reloaded(request).numpy(), want)
    np.testing.assert_array_equal(served(**request)[C.SERVING_OUTPUT].numpy(), want)
    assert want[2, 0] == vocabulary.index("école") + 2


def test_a_classification_export_also_answers_with_class_names(tmp_path):
    import keras
    import tensorflow as tf

    from kerasflow.modeling.export import export_saved_model

    data, _ = ingest.build_bundle(RawData(frame=raw_rows(), label="churn"))
    result = split.split_bundle(data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0))
    meta = result.meta
    keras.utils.set_random_seed(1)
    inputs, x = builders.build_inputs(meta)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    export_saved_model(model, tmp_path / "export", meta)
    loaded = tf.saved_model.load(str(tmp_path / "export"))
    test = result.parts["test"]
    request = {k: tf.constant(v) for k, v in artifacts.model_inputs(meta, test).items()}
    scores = loaded.signatures[C.SERVING_SIGNATURE](**request)[C.SERVING_OUTPUT].numpy()
    np.testing.assert_allclose(scores, model.predict(request, verbose=0), atol=1e-6)
    named = loaded.signatures[C.CLASSIFY_SIGNATURE](**request)
    classes = [c.decode() for c in named["classes"].numpy()]
    assert classes == [meta[C.META_CLASS_NAMES][i] for i in scores.argmax(axis=1)]
    assert named["class_names"].numpy()[0].tolist() == [b"no", b"yes"]
    np.testing.assert_allclose(named["scores"].numpy(), scores, atol=1e-6)
