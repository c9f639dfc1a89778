"""`training.recompute_batchnorm`: a trained model's BatchNorm statistics become the average of its
batch statistics over clean training frames; the encoder's frozen ones stay; the bundle is rewritten
whole, with nothing measured on the old weights left in it."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from demo.bundle import load_bundle, load_keras_model, read_config, sha256_of, write_config
from tests.helpers import CAMVID_FIXTURE
from training.recompute_batchnorm import main, recompute_batchnorm_statistics, trained_batchnorm_layers


# Frames of different brightness, so that each batch's moments differ; cropped to 64x96 (stride 16 and 32).
FRAMES = (np.random.default_rng(0).integers(0, 256, (5, 70, 100, 3)) * np.linspace(0.2, 1, 5)[:, None, None, None]
          ).astype(np.uint8)


def test_statistics_become_the_frame_weighted_average_of_batch_moments():
    import keras

    from training.models import build_unet

    keras.utils.set_random_seed(3)
    model = build_unet(base_filters=4)
    norms = trained_batchnorm_layers(model)
    first = norms[0]
    first.moving_mean.assign(np.full(first.moving_mean.shape, 7.0, np.float32))

    assert recompute_batchnorm_statistics(model, FRAMES, batch_size=2, stride=16) == len(norms)

    # The first BatchNorm's input depends on no other: compute it in inference mode and average its
    # moments over the batches of 2, 2 and 1 frames, weighted by frames.
    inputs = keras.Model(model.inputs, first.input).predict(FRAMES[:, 3:67, 2:98].astype(np.float32), verbose=0)
    batches = [inputs[start:start + 2] for start in range(0, 5, 2)]
    mean = sum(len(batch) * batch.mean(axis=(0, 1, 2)) for batch in batches) / 5
    variance = sum(len(batch) * batch.var(axis=(0, 1, 2)) for batch in batches) / 5
    assert np.ptp([batch.mean() for batch in batches]) > 0.1 * np.abs(mean).max()  # the batches do differ
    np.testing.assert_allclose(first.moving_mean.numpy(), mean, rtol=1e-4)
    np.testing.assert_allclose(first.moving_variance.numpy(), variance, rtol=1e-3)
    assert all(layer.momentum == 0.99 for layer in norms)  # the training setting comes back


def test_an_encoders_frozen_statistics_are_kept_and_dropout_comes_back():
    import keras

    from training.models import build_efficientnet_unet

    model = build_efficientnet_unet("lite0", encoder_weights=None, decoder_filters=(16, 8, 8, 8, 8))
    decoder_norms = trained_batchnorm_layers(model)
    frozen = [layer for layer in model.get_layer("encoder").layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(decoder_norms) == 10 and frozen and not set(map(id, frozen)) & set(map(id, decoder_norms))
    before = [[weight.copy() for weight in layer.get_weights()] for layer in frozen]

    assert recompute_batchnorm_statistics(model, FRAMES, batch_size=2) == 10

    for layer, weights in zip(frozen, before):  # ImageNet's statistics (here: the initial ones) are kept
        for weight, old in zip(layer.get_weights(), weights):
            np.testing.assert_array_equal(weight, old)
    assert model.get_layer("bottleneck_dropout").rate == 0.1


@pytest.fixture
def bundle_copy(tiny_bundle_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


def test_the_bundle_is_rewritten_with_new_statistics_and_without_figures_of_the_old_weights(bundle_copy, capsys):
    before = read_config(bundle_copy)
    # As `evaluate --update-bundle --held-out --input-size` leaves a bundle: fed at a scale chosen on the old weights.
    before.training["input_size"] = [180, 240]
    before.input_size, before.input_size_selected_on = (120, 160), "held-out drives 0006R0"
    write_config(bundle_copy, before)
    for measured in ("evaluation_val.json", "evaluation_val_at_120x160.json", "threshold_sweep_val.png"):
        (bundle_copy / measured).write_text("{}")
    old_means = [layer.moving_mean.numpy().copy() for layer in trained_batchnorm_layers(load_keras_model(bundle_copy))]

    assert main([str(bundle_copy), "--data-dir", str(CAMVID_FIXTURE)]) == 0

    assert "recomputed on 4 training frames at 180x240" in capsys.readouterr().out
    config = read_config(bundle_copy)
    assert config.model_sha256 == sha256_of(bundle_copy / "model.keras") != before.model_sha256
    record = config.training["batchnorm_statistics_recomputed"]
    assert record["frames"] == 4 and record["split"] == "train" and record["from_model_sha256"] == before.model_sha256
    assert record["drives"] == ["0001TP", "0006R0", "0016E5"]
    assert config.metrics == {} and config.threshold_selected_on is None
    assert config.input_size == (180, 240) and config.input_size_selected_on is None  # the training size again
    assert not list(bundle_copy.glob("evaluation_*.json")) and not list(bundle_copy.glob("threshold_sweep*"))
    load_bundle(bundle_copy)  # verifies model.keras and the graphs converted from it, as the app does
    assert set(config.serving_graphs["files"]) == {path.name for path in bundle_copy.glob("graph_*")}
    new_means = [layer.moving_mean.numpy() for layer in trained_batchnorm_layers(load_keras_model(bundle_copy))]
    assert len(new_means) == record["layers"] == len(old_means)
    assert all(not np.allclose(new, old) for new, old in zip(new_means, old_means))


def test_a_data_dir_without_a_train_split_is_refused_and_the_bundle_kept(bundle_copy, tmp_path, capsys):
    before = sha256_of(bundle_copy / "config.json")
    assert main([str(bundle_copy), "--data-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert sha256_of(bundle_copy / "config.json") == before
