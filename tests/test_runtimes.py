"""The serving runtimes: LiteRT gives TensorFlow's answer at every photo size, and falls back safely."""
from __future__ import annotations

import builtins
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from demo.engine import SegmentationEngine
from demo.runtimes import LITERT, TENSORFLOW, make_forward

# Photo shapes that feed the tiny bundle (180x240, stride 16) at different padded sizes, odd ones included.
PHOTO_SHAPES = [(360, 480), (481, 359), (37, 1000), (240, 180), (1, 1)]


def photo(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def engines(tiny_bundle):
    return {runtime: SegmentationEngine(tiny_bundle.model, tiny_bundle.config, runtime=runtime)
            for runtime in (TENSORFLOW, LITERT)}


def test_each_runtime_is_what_it_says(engines):
    assert {name: engine.runtime for name, engine in engines.items()} == {TENSORFLOW: TENSORFLOW, LITERT: LITERT}


def test_litert_gives_tensorflows_probabilities_at_every_photo_size(engines):
    # Back and forth between shapes: each change re-plans LiteRT's tensors.
    for seed, shape in enumerate(PHOTO_SHAPES + PHOTO_SHAPES[::-1]):
        rgb = photo(shape, seed)
        reference = engines[TENSORFLOW].predict_probabilities(rgb)
        served = engines[LITERT].predict_probabilities(rgb)
        assert served.shape == reference.shape == shape
        np.testing.assert_allclose(served, reference, atol=1e-5)


def test_litert_answers_parallel_callers_as_it_answers_one(engines):
    photos = [photo(PHOTO_SHAPES[index % 3], index) for index in range(12)]
    alone = [engines[LITERT].predict_probabilities(rgb) for rgb in photos]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(engines[LITERT].predict_probabilities, photos))
    for expected, got in zip(alone, together):
        np.testing.assert_array_equal(got, expected)


def test_model_runtime_environment_variable_chooses(tiny_bundle, monkeypatch):
    monkeypatch.setenv("MODEL_RUNTIME", "TensorFlow")
    assert SegmentationEngine(tiny_bundle.model, tiny_bundle.config).runtime == TENSORFLOW
    monkeypatch.delenv("MODEL_RUNTIME")
    assert SegmentationEngine(tiny_bundle.model, tiny_bundle.config).runtime == LITERT  # the default

    monkeypatch.setenv("MODEL_RUNTIME", "onnx")
    with pytest.raises(ValueError, match="Unknown runtime 'onnx': choose one of litert, tensorflow"):
        make_forward(tiny_bundle.model)


def test_without_litert_the_engine_serves_tensorflow_and_says_so(tiny_bundle, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ModuleNotFoundError("No module named 'ai_edge_litert'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with caplog.at_level(logging.WARNING, logger="demo.runtimes"):
        engine = SegmentationEngine(tiny_bundle.model, tiny_bundle.config, runtime=LITERT)

    assert engine.runtime == TENSORFLOW
    assert "LiteRT is not available (ModuleNotFoundError: No module named 'ai_edge_litert')" in caplog.text
    assert engine.predict_probabilities(photo((360, 480), 0)).shape == (360, 480)


def test_a_fixed_size_model_is_converted_for_its_one_input_shape():
    """The vgg16-unet's upsampling does not convert with dynamic height and width; fed one shape, it does."""
    from training.models import build_model

    model = build_model("vgg16-unet", input_size=(64, 64), encoder_weights="none")
    config = {"input_size": [64, 64], "resize": "stretch", "stride": 16, "threshold": 0.5}
    served = SegmentationEngine(model, config, runtime=LITERT)
    reference = SegmentationEngine(model, config, runtime=TENSORFLOW)

    assert served.runtime == LITERT
    rgb = photo((360, 480), 3)
    np.testing.assert_allclose(served.predict_probabilities(rgb), reference.predict_probabilities(rgb), atol=1e-4)
