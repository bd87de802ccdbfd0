"""How a loaded signature is called: flat tensors when they fit it, its own call otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.serving.errors import Code, ServingError
from kerasflow.serving.servable import _FlatCall, load_servable

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def servable(tmp_path_factory):
    import tensorflow as tf

    class Model(tf.Module):
        def __init__(self):
            super().__init__()
            self.scale = tf.Variable([1.0, 10.0, 100.0])

        @tf.function(
            input_signature=[
                tf.TensorSpec((None, 3), tf.float32, name="zeta"),
                tf.TensorSpec((None,), tf.int64, name="alpha"),
            ]
        )
        def serve(self, zeta, alpha):
            return {"scaled": zeta * self.scale, "shifted": alpha + 1}

    model = Model()
    path = tmp_path_factory.mktemp("export") / "1"
    tf.saved_model.save(model, str(path), signatures={"serving_default": model.serve})
    return load_servable(path, "m", 1, warmup=False)


def test_inputs_reach_their_own_parameters(servable):
    signature = servable.signature("serving_default")
    assert isinstance(signature._call, _FlatCall)
    zeta = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    alpha = np.array([7, 8], dtype=np.int64)
    outputs = signature.run({"alpha": alpha, "zeta": zeta})
    np.testing.assert_array_equal(outputs["scaled"], zeta * [1, 10, 100])
    np.testing.assert_array_equal(outputs["shifted"], alpha + 1)


def test_inputs_that_do_not_fit_get_the_signatures_own_answer(servable):
    signature = servable.signature("serving_default")
    alpha = np.array([7], dtype=np.int64)
    for bad in (
        {"alpha": alpha, "zeta": [[1, 2, 3]]},
        {"alpha": alpha, "zeta": np.zeros((1, 4), np.float32)},
        {"alpha": alpha.astype(np.int32), "zeta": np.zeros((1, 3), np.float32)},
        {"zeta": np.zeros((1, 3), np.float32)},
    ):
        with pytest.raises(ServingError) as caught:
            signature.run(bad)
        assert caught.value.code == Code.INVALID_ARGUMENT
