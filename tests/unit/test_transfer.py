"""Transfer learning: the base's input conversion, freezing and fine-tuning, weights checks."""

from __future__ import annotations

import numpy as np
import pytest

from kerasflow.modeling import builders, search_space, transfer
from kerasflow.runtime.errors import UserError
from kerasflow.settings import RunSettings

pytestmark = pytest.mark.unit


def image_meta(channels=1, size=8):
    return {
        "modality": "image",
        "task": "classification",
        "image_shape": [size, size, channels],
        "normalization": {"image": {"mean": 8.0, "variance": 25.0}},
        "class_names": ["a", "b", "c"],
    }


@pytest.fixture(scope="module")
def saved_base(tmp_path_factory):
    """A small untrained MobileNetV2 base (alpha 0.35, 32x32) saved as a Keras model."""
    import keras

    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, include_top=False, weights=None, pooling="avg"
    )
    path = tmp_path_factory.mktemp("base") / "base.keras"
    base.save(path)
    return str(path)


@pytest.mark.parametrize("convention", sorted(transfer.CONVENTIONS))
def test_adapter_maps_gray_pixel_range_onto_the_conventions_rgb(convention):
    layer = transfer.input_adapter(1, (0.0, 16.0), convention)
    gray = np.array([[[[0.0], [8.0], [16.0]]]], dtype="float32")  # 1x1x3 pixels, one channel
    out = np.asarray(layer(gray))
    assert out.shape == (1, 1, 3, 3)
    scales, offsets, _ = transfer.CONVENTIONS[convention]
    for i, pixel in enumerate((0.0, 127.5, 255.0)):
        expected = [scales[c] * pixel + offsets[c] for c in range(3)]
        np.testing.assert_allclose(out[0, 0, i], expected, rtol=1e-5, atol=1e-4)
    assert not layer.trainable


def test_adapter_reorders_rgb_for_caffe_weights():
    layer = transfer.input_adapter(3, (0.0, 1.0), "caffe")
    rgb = np.array([[[[1.0, 0.0, 0.5]]]], dtype="float32")  # R=255, G=0, B=127.5 in 0..255
    out = np.asarray(layer(rgb))[0, 0, 0]
    np.testing.assert_allclose(out, [127.5 - 103.939, -116.779, 255.0 - 123.68], atol=1e-3)


def test_transfer_config_refuses_images_of_other_channels():
    with pytest.raises(UserError, match="gray or RGB"):
        transfer.transfer_config("mobilenet_v2", "imagenet", 0, np.zeros((2, 8, 8, 2)))
    config = transfer.transfer_config("mobilenet_v2", "w.keras", 0, np.full((2, 8, 8, 1), 3.0))
    assert config["pixel_range"] == [3.0, 4.0]  # a constant image still spans a range
    with pytest.raises(UserError, match="for images; these data are tabular"):
        transfer.with_transfer({"modality": "tabular"}, config)


def test_base_size_is_at_least_32_or_the_setting():
    assert transfer.base_size({"image_size": 0}, (8, 8, 1)) == 32
    assert transfer.base_size({"image_size": 0}, (48, 40, 3)) == 48
    assert transfer.base_size({"image_size": 96}, (8, 8, 1)) == 96


def test_model_takes_the_raw_images_and_freezes_the_base_then_unfreezes_its_top(saved_base):
    x = np.random.default_rng(0).uniform(0, 16, (6, 8, 8, 1)).astype("float32")
    config = transfer.transfer_config("mobilenet_v2", saved_base, 0, x)
    meta = transfer.with_transfer(image_meta(), config)
    space = search_space.resolve_space("image", {}, transfer=True)
    values = {name: search_space.space_values(spec)[0] for name, spec in space.items()}
    model = builders.build_from_values(values, meta)
    # The final fit builds from the search's best values alone: the same transfer model.
    final = builders.build_model(builders.fixed_hyperparameters(values), meta)
    assert [w.shape for w in final.weights] == [w.shape for w in model.weights]
    assert tuple(model.inputs[0].shape[1:]) == (8, 8, 1)
    assert model.inputs[0].name == "image"
    assert model.predict(x, verbose=0).shape == (6, 3)
    base = transfer.find_base(model)
    assert not base.trainable and not base.trainable_weights
    head_only = {id(w) for w in model.trainable_weights}
    assert head_only and not head_only & {id(w) for w in base.weights}
    lr = float(model.optimizer.learning_rate)

    unfrozen = transfer.unfreeze_top(model, meta, 5)

    assert unfrozen == 5
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert len(trainable) == 5
    assert all("bn" not in layer.name.lower() for layer in trainable)
    assert not transfer.find_base(model).layers[1].trainable  # the bottom stays frozen
    assert float(model.optimizer.learning_rate) == pytest.approx(lr * transfer.FINE_TUNE_LR_FACTOR)
    adapter = model.get_layer("to_base_input")
    assert not adapter.trainable
    y = np.array([0, 1, 2, 0, 1, 2])
    bottom = base.weights[:2]
    before = [np.copy(w) for w in bottom]
    model.fit(x, y, epochs=1, verbose=0)
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(before, bottom, strict=True))


def test_imagenet_weights_missing_from_the_cache_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(transfer, "keras_cache_dirs", lambda: [tmp_path / "models"])
    with pytest.raises(UserError) as err:
        transfer.check_base_weights("efficientnet_b0", "imagenet")
    line = str(err.value)
    assert "\n" not in line
    assert line.startswith("base_weights 'imagenet': the ImageNet weights of efficientnet_b0 ")
    assert "efficientnetb0_notop.h5" in line and str(tmp_path / "models") in line
    assert "cannot be downloaded" in line

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "efficientnetb0_notop.h5").write_bytes(b"")
    transfer.check_base_weights("efficientnet_b0", "imagenet")  # found: no error


def test_keras_would_download_is_refused_with_the_same_line(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(transfer, "keras_cache_dirs", lambda: [tmp_path / "models"])
    config = {"base_model": "mobilenet_v2", "base_weights": "imagenet"}
    with pytest.raises(UserError, match="ImageNet weights of mobilenet_v2 .* not in the Keras"):
        transfer.load_base(config, 32)


def test_missing_weights_file_and_settings_that_do_not_go_together(tmp_path):
    with pytest.raises(UserError, match="base_weights: file not found"):
        transfer.check_base_weights("mobilenet_v2", str(tmp_path / "nope.keras"))
    with pytest.raises(UserError, match="unknown base_model 'vgg99'"):
        RunSettings.from_values({"base_model": "vgg99"}, {})
    with pytest.raises(UserError, match="base_model and build_model cannot be combined"):
        RunSettings.from_values({"base_model": "mobilenet_v2", "build_model": "m:f"}, {})
    with pytest.raises(UserError, match="base_model cannot be combined with 'refit'"):
        RunSettings.from_values({"base_model": "mobilenet_v2", "refit": True}, {})
    with pytest.raises(UserError, match="same base_model"):
        RunSettings.from_values({"hyperparameter_search": {"base_model": "resnet50"}}, {})
    cfg = RunSettings.from_values({"base_model": "resnet50", "base_weights": "w.h5"}, {})
    assert cfg.train.base_model == cfg.hyperparameter_search.base_model == "resnet50"


def test_transfer_family_needs_a_base_and_the_head_space_is_its_own():
    with pytest.raises(UserError, match="transfer needs a base_model"):
        search_space.resolve_space("image", {"family": "transfer"})
    with pytest.raises(UserError, match="cnn does not fit image data"):
        search_space.resolve_space("image", {"family": "cnn"}, transfer=True)
    space = search_space.resolve_space("image", {"units": [32, 64]}, transfer=True)
    assert space["family"] == {"fixed": "transfer"}
    assert space["units"] == {"choice": [32, 64]}
    assert "filters" not in space


def test_fine_tuning_starts_from_the_heads_tuned_rate_not_the_lowered_one(saved_base):
    x = np.random.default_rng(1).uniform(0, 16, (4, 8, 8, 1)).astype("float32")
    meta = transfer.with_transfer(
        image_meta(), transfer.transfer_config("mobilenet_v2", saved_base, 0, x)
    )
    space = search_space.resolve_space("image", {}, transfer=True)
    values = {name: search_space.space_values(spec)[0] for name, spec in space.items()}
    values["learning_rate"] = 2e-3
    model = builders.build_from_values(values, meta)
    model.optimizer.learning_rate.assign(2e-3 / 8)  # what a plateau or a schedule leaves

    transfer.unfreeze_top(model, meta, 3, learning_rate=values["learning_rate"])

    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3 * 0.1)
    transfer.unfreeze_top(model, meta, 3)  # without it: the optimizer's current rate
    assert float(model.optimizer.learning_rate) == pytest.approx(2e-3 * 0.1 * 0.1)


@pytest.mark.parametrize(("pooling", "features"), [("avg", 16), ("max", 16), ("flatten", 64)])
def test_head_pools_the_bases_feature_map_as_its_pooling_says(tmp_path, pooling, features):
    import keras

    # A base that ends in a 2x2 map of 16 channels, as a network cut inside does.
    inp = keras.Input((32, 32, 3))
    out = keras.layers.Conv2D(16, 3, strides=16, padding="same")(inp)
    path = tmp_path / "cut.keras"
    keras.Model(inp, out).save(path)
    x = np.random.default_rng(2).uniform(0, 16, (4, 8, 8, 1)).astype("float32")
    meta = transfer.with_transfer(
        image_meta(), transfer.transfer_config("mobilenet_v2", str(path), 0, x)
    )
    space = search_space.resolve_space("image", {"pooling": pooling, "units": 8}, transfer=True)
    values = {name: search_space.space_values(spec)[0] for name, spec in space.items()}

    model = builders.build_from_values(values, meta)

    pooled = model.get_layer("pool")
    assert tuple(pooled.output.shape[1:]) == (features,)
    assert model.predict(x, verbose=0).shape == (4, 3)


def test_a_base_that_pools_itself_is_read_as_it_is(saved_base):
    x = np.random.default_rng(3).uniform(0, 16, (4, 8, 8, 1)).astype("float32")
    meta = transfer.with_transfer(
        image_meta(), transfer.transfer_config("mobilenet_v2", saved_base, 0, x)
    )
    space = search_space.resolve_space("image", {"pooling": "flatten"}, transfer=True)
    values = {name: search_space.space_values(spec)[0] for name, spec in space.items()}

    model = builders.build_from_values(values, meta)

    assert "pool" not in [layer.name for layer in model.layers]
    assert model.predict(x, verbose=0).shape == (4, 3)
