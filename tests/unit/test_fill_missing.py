"""A served row with a missing number is answered as if it held the value training imputed."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from kerasflow import constants as C
from kerasflow.components.ingest_clean import core as ingest
from kerasflow.components.normalize_split import core as split
from kerasflow.data import artifacts
from kerasflow.data.sources import RawData
from kerasflow.modeling import builders
from kerasflow.settings import SplitSettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("scaling", ["zscore", "minmax"])
def test_nan_in_a_served_number_is_filled_as_training_imputed(tmp_path, scaling):
    import tensorflow as tf

    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "a": rng.normal(5, 2, 200),
            "b": rng.normal(-3, 1, 200),
            "y": rng.choice(["no", "yes"], 200),
        }
    )
    data, _ = ingest.build_bundle(RawData(frame=frame, label="y"))
    splits = split.split_bundle(
        data, SplitSettings(val_fraction=0.2, test_fraction=0.2, seed=0, scaling=scaling)
    )
    meta = splits.meta
    train = splits.parts["train"].frame
    stats = meta[C.META_NORMALIZATION]
    names = {f["name"]: f["input"] for f in meta[C.META_FEATURES]}
    for col in ("a", "b"):
        # The default policy imputes the train median; min-max keeps its minimum apart.
        assert stats[names[col]]["fill"] == pytest.approx(train[col].median())
        assert stats[names[col]]["fill"] != pytest.approx(stats[names[col]]["mean"])
    model = builders.build_model(
        builders.fixed_hyperparameters({"num_layers": 1, "units_0": 8, "learning_rate": 0.01}), meta
    )
    model.save(tmp_path / "m.keras")
    model.export(str(tmp_path / "export"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "export")).signatures[C.SERVING_SIGNATURE]
    gap = {
        names["a"]: tf.constant([[np.nan], [1.0]], tf.float32),
        names["b"]: tf.constant([[0.5], [np.nan]], tf.float32),
    }
    filled = {
        names["a"]: tf.constant([[stats[names["a"]]["fill"]], [1.0]], tf.float32),
        names["b"]: tf.constant([[0.5], [stats[names["b"]]["fill"]]], tf.float32),
    }
    got = served(**gap)[C.SERVING_OUTPUT].numpy()
    assert not np.isnan(got).any()
    np.testing.assert_allclose(got, served(**filled)[C.SERVING_OUTPUT].numpy(), atol=1e-6)
    # a fresh interpreter (as in the evaluate step) loads the saved model and agrees
    np.save(tmp_path / "got.npy", got)
    script = (
        "import numpy as np, sys\n"
        "from kerasflow.modeling import builders\n"
        f"m = builders.load_model({str(tmp_path / 'm.keras')!r})\n"
        f"gap = {{{names['a']!r}: np.array([[np.nan], [1.0]], 'float32'),"
        f" {names['b']!r}: np.array([[0.5], [np.nan]], 'float32')}}\n"
        f"want = np.load({str(tmp_path / 'got.npy')!r})\n"
        "np.testing.assert_allclose(m.predict(gap, verbose=0), want, atol=1e-6)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True)
    assert artifacts.feature_columns(meta) == ["a", "b"]
