"""Architectures: output shapes, the reference parameter count, in-graph preprocessing."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from training.models import ARCHITECTURES, build_model, count_flops


def test_reference_vgg16_unet_has_the_seed_parameter_count():
    model = build_model("vgg16-unet", encoder_weights=None)
    preprocessing = model.get_layer("vgg16_preprocess").count_params()
    assert model.count_params() - preprocessing == 25_895_425
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 224, 224, 1)
    assert model.layers[-1].activation.__name__ == "sigmoid"


def test_vgg16_unet_normalises_like_keras_preprocess_input():
    model = build_model("vgg16-unet", encoder_weights=None)
    preprocess = keras.Model(model.input, model.get_layer("vgg16_preprocess").output)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3)).astype(np.float32)
    expected = keras.applications.vgg16.preprocess_input(pixels.copy())
    np.testing.assert_allclose(preprocess(pixels).numpy(), expected, atol=1e-3)


def test_vgg16_unet_can_freeze_its_encoder():
    model = build_model("vgg16-unet", encoder_weights=None, freeze_encoder=True)
    encoder = model.get_layer("vgg16_encoder")
    assert not encoder.trainable_weights and encoder.non_trainable_weights
    assert model.get_layer("car_probability").trainable


def test_vgg16_unet_loads_encoder_weights_from_a_local_file(tmp_path):
    encoder = keras.applications.VGG16(include_top=False, weights=None, input_shape=(224, 224, 3))
    encoder.get_layer("block1_conv1").set_weights([np.full((3, 3, 3, 64), 0.5, np.float32), np.zeros(64, np.float32)])
    path = tmp_path / "vgg16_notop.weights.h5"
    encoder.save_weights(path)
    model = build_model("vgg16-unet", encoder_weights=str(path))
    loaded = model.get_layer("vgg16_encoder").get_layer("block1_conv1").get_weights()[0]
    np.testing.assert_array_equal(loaded, 0.5)


@pytest.mark.parametrize("name", [name for name, arch in ARCHITECTURES.items() if not arch.fixed_input])
@pytest.mark.parametrize("size", [(368, 480), (64, 96), (224, 224)])
def test_compact_models_take_any_stride_multiple(name, size):
    model = build_model(name, base_filters=4)
    output = model(np.zeros((1, *size, 3), np.float32), training=False)
    assert output.shape == (1, *size, 1)
    assert float(np.min(output)) >= 0.0 and float(np.max(output)) <= 1.0


def test_flops_of_the_reference_model():
    # 90.3 GFLOPs per 224x224 image (DESIGN.md, measured the same way).
    assert count_flops(build_model("vgg16-unet", encoder_weights=None), (224, 224)) / 1e9 == pytest.approx(90.35, abs=0.1)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'; choose from"):
        build_model("resnet")
