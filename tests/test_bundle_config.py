"""config.json as `BundleConfig`: old bundles load, unknown keys survive, nothing to read needs TensorFlow."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from demo.bundle import CONFIG_FILE, BundleConfig, BundleError
from demo.bundle_files import read_config
from demo.loading import DEFAULT_BUNDLE_DIR

REQUIRED_ONLY = {"schema_version": 1, "architecture": "unet", "input_size": [240, 320], "resize": "keep_aspect",
                 "stride": 16, "target_class": {"id": 8, "name": "car"}, "threshold": 0.5, "model_sha256": "0" * 64}


def test_the_default_models_config_round_trips_byte_for_byte():
    text = (DEFAULT_BUNDLE_DIR / CONFIG_FILE).read_text()
    config = BundleConfig.from_json(text)
    assert config.to_json() == text
    assert config.input_size == (360, 480) and config.trained_input_size == (432, 576)
    assert config.scales_text == "trained at 432x576, fed at 360x480"
    assert config.target_class.name == "car" and config.input_size_selected_on == "held-out drives 0001TP, 0006R0"
    assert config.dataset.train_drives == ["0001TP", "0006R0", "0016E5"] and config.held_out_drives


def test_an_old_bundle_with_only_the_required_keys_loads_and_gains_no_sections(tmp_path):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(REQUIRED_ONLY))
    config = read_config(tmp_path)
    assert config.test_time_flip is False and config.val_iou is None and config.serving_graphs is None
    assert config.scales_text == "trained at 240x320"  # fed as trained
    assert json.loads(config.to_json()) == {**REQUIRED_ONLY, "test_time_flip": False}


def test_keys_this_version_does_not_know_are_kept(tmp_path):
    newer = {**REQUIRED_ONLY, "calibration": {"method": "temperature", "t": 1.3},
             "dataset": {"name": "CamVid", "licence": "CC BY-NC 4.0"},
             "serving_graphs": {"model_sha256": "0" * 64, "quantiser": "v2",
                                "files": {"graph_any_shape.tflite": {"input_shape": None, "sha256": "1" * 64,
                                                                     "weights": "float16"}}}}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(newer))
    config = read_config(tmp_path)
    assert config.dataset.name == "CamVid" and config.extra == {"calibration": newer["calibration"]}
    config.threshold = 0.4
    assert json.loads(config.to_json()) == {**newer, "threshold": 0.4, "test_time_flip": False}


@pytest.mark.parametrize("content, message", [
    ({key: value for key, value in REQUIRED_ONLY.items() if key not in ("stride", "threshold")}, "lacks stride, threshold"),
    ({**REQUIRED_ONLY, "schema_version": 2}, "has schema version 2; this app reads up to 1"),
    ([1, 2], "is not a JSON object"),
])
def test_a_config_that_cannot_be_served_is_refused_with_what_is_wrong(tmp_path, content, message):
    (tmp_path / CONFIG_FILE).write_text(json.dumps(content))
    with pytest.raises(BundleError, match=message):
        read_config(tmp_path)


def test_reading_and_verifying_a_bundle_imports_neither_tensorflow_nor_keras():
    code = ("import sys; from demo.bundle_files import verify_bundle; from demo.loading import DEFAULT_BUNDLE_DIR; "
            "verify_bundle(DEFAULT_BUNDLE_DIR); print(sorted({'tensorflow', 'keras'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], cwd=DEFAULT_BUNDLE_DIR.parents[1], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_what_if_feed_scale_applies_to_a_fully_convolutional_model_and_is_refused_for_a_fixed_size_one(tmp_path):
    from demo.bundle import Bundle

    convolutional = Bundle(path=tmp_path, config=BundleConfig.from_dict(REQUIRED_ONLY), model=None, source="test")
    convolutional.feed_at((312, 416))
    assert convolutional.config.input_size == (312, 416)
    fixed = Bundle(path=tmp_path, config=BundleConfig.from_dict({**REQUIRED_ONLY, "resize": "stretch"}), model=None,
                   source="test")
    with pytest.raises(BundleError, match="holds a fixed-size model: it takes only 240x320"):
        fixed.feed_at((312, 416))
    assert fixed.config.input_size == (240, 320)
    fixed.feed_at((240, 320))  # its own size is no what-if
    # The config's copy fed elsewhere (int8 calibration at the served scale) leaves the config as it was.
    config = BundleConfig.from_dict(REQUIRED_ONLY)
    assert config.fed_at((312, 416)).input_size == (312, 416) and config.input_size == (240, 320)


def test_a_graphs_answer_counts_as_probabilities_up_to_float32_rounding():
    from demo.graphs import answers_probabilities

    shape = (1, 4, 6, 3)
    answer = np.full((1, 4, 6, 1), 0.5, np.float32)
    assert answers_probabilities(answer, shape)
    answer[0, 0, 0, 0] = np.nextafter(np.float32(1), np.float32(2))  # a float32 sigmoid's 1.0000001
    assert answers_probabilities(answer, shape)
    for wrong in (1.01, -0.01, np.nan):
        answer[0, 0, 0, 0] = wrong
        assert not answers_probabilities(answer, shape)
    assert not answers_probabilities(np.full((1, 4, 6), 0.5, np.float32), shape)  # a dropped channel axis
    assert not answers_probabilities(np.full((1, 2, 3, 1), 0.5, np.float32), shape)


def test_a_loaded_bundle_model_takes_a_plain_array_without_keras_warning(tiny_bundle_dir):
    """The shipped bundle saved its input as a list of one; the tiny bundle is written by today's code. Both,
    loaded, take an image batch as an array with no "structure of `inputs` doesn't match" warning."""
    import warnings

    import keras

    from demo.graphs import load_keras_model

    saved = keras.saving.load_model(DEFAULT_BUNDLE_DIR / "model.keras", compile=False, safe_mode=True)
    assert isinstance(saved.input, list), "the shipped bundle no longer declares its input as a list: drop this case"
    for bundle_dir in (DEFAULT_BUNDLE_DIR, tiny_bundle_dir):
        model = load_keras_model(bundle_dir)
        assert not isinstance(model.input, list) and not isinstance(model.output, list)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            probabilities = np.asarray(model(np.zeros((1, 64, 96, 3), np.float32), training=False))
        assert probabilities.shape == (1, 64, 96, 1)
    # The rewrapped model is the saved one: the same weights, the same answer.
    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = np.asarray(saved([image], training=False))
    np.testing.assert_array_equal(np.asarray(load_keras_model(DEFAULT_BUNDLE_DIR)(image, training=False)), expected)
