"""The serving runtimes: ONNX Runtime and LiteRT give TensorFlow's answer at every photo size, and fall back safely.

`tiny_bundle.model` is the bundle's carried graphs (tests/test_serving_graphs.py checks them);
the path that converts a Keras model at start is tested here on the bundle's model.keras.
"""
from __future__ import annotations

import builtins
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from demo.graphs import load_keras_model
from demo.loading import load_bundle
from demo.engine import SegmentationEngine
from demo.runtimes import LITERT, LITERT_FLOAT32, LITERT_INT8, ONNX_RUNTIME, TENSORFLOW, make_forward
from helpers import serving_config

# Photo shapes that feed the tiny bundle (180x240, stride 16) at different padded sizes, odd ones included;
# the first is fed at the training frames' shape, which LiteRT is converted for up front.
PHOTO_SHAPES = [(360, 480), (481, 359), (37, 1000), (240, 180), (1, 1)]


def photo(shape: tuple[int, int], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def keras_model(tiny_bundle_dir):
    return load_keras_model(tiny_bundle_dir)


@pytest.fixture(scope="module")
def engines(tiny_bundle):
    return {runtime: SegmentationEngine(tiny_bundle.model, tiny_bundle.config, runtime=runtime)
            for runtime in (TENSORFLOW, ONNX_RUNTIME, LITERT, LITERT_FLOAT32, LITERT_INT8)}


def test_each_runtime_is_what_it_says(engines):
    assert {name: engine.runtime for name, engine in engines.items()} == {
        TENSORFLOW: TENSORFLOW, ONNX_RUNTIME: ONNX_RUNTIME, LITERT: LITERT, LITERT_FLOAT32: LITERT_FLOAT32,
        LITERT_INT8: LITERT_INT8}


def test_onnx_runtime_and_litert_give_tensorflows_probabilities_at_every_photo_size(engines):
    # Back and forth between shapes: the canonical one, then the any-shape graph re-planned at each change.
    for seed, shape in enumerate(PHOTO_SHAPES + PHOTO_SHAPES[::-1]):
        rgb = photo(shape, seed)
        reference = engines[TENSORFLOW].predict_probabilities(rgb)
        float32 = engines[LITERT_FLOAT32].predict_probabilities(rgb)
        float16_weights = engines[LITERT].predict_probabilities(rgb)
        int8_weights = engines[LITERT_INT8].predict_probabilities(rgb)
        onnx = engines[ONNX_RUNTIME].predict_probabilities(rgb)
        assert float32.shape == float16_weights.shape == int8_weights.shape == onnx.shape == reference.shape == shape
        np.testing.assert_allclose(onnx, reference, atol=0.01)  # float16 weights, as LiteRT's
        np.testing.assert_allclose(float32, reference, atol=1e-5)
        np.testing.assert_allclose(float16_weights, reference, atol=0.01)
        # int8 weights move probabilities a little (BENCHMARKS.md: 0.04 at most on a real photo).
        np.testing.assert_allclose(int8_weights, reference, atol=0.05)


def test_float_litert_runs_one_any_shape_graph_made_at_start(keras_model, tiny_bundle):
    engine = SegmentationEngine(keras_model, tiny_bundle.config, runtime=LITERT)
    assert engine._forward._canonical is None and engine._forward._dynamic is not None
    for shape in [(720, 960), (480, 360), (360, 640)]:
        engine.predict_probabilities(photo(shape, 0))
    assert engine._forward._fallback is None and engine._forward.plans == 3


def test_the_int8_any_shape_graph_is_converted_only_when_a_photo_needs_it(keras_model, tiny_bundle):
    engine = SegmentationEngine(keras_model, tiny_bundle.config, runtime=LITERT_INT8)
    engine.warm_up()
    engine.predict_probabilities(photo((720, 960), 0))  # 4:3: the canonical shape
    assert engine._forward._dynamic is None and engine._forward.plans == 1

    engine.predict_probabilities(photo((480, 360), 0))  # portrait
    engine.predict_probabilities(photo((480, 360), 1))
    assert engine._forward._dynamic is not None and engine._forward.plans == 2


def test_onnx_runtime_fixes_the_canonical_shape_and_leaves_others_to_the_any_shape_session(tiny_bundle_dir):
    bundle = load_bundle(tiny_bundle_dir)  # a fresh load: no photo has run yet
    engine = SegmentationEngine(bundle.model, bundle.config, runtime=ONNX_RUNTIME)
    sessions = bundle.model._sessions
    engine.warm_up()
    engine.predict_probabilities(photo((720, 960), 0))  # 4:3
    # At start, and for 4:3 photos, only the session fixed to their shape: 180x240 frames, padded to the stride.
    assert set(sessions) == {(1, 192, 240, 3)}
    assert sessions[(1, 192, 240, 3)].get_inputs()[0].shape == [1, 192, 240, 3]
    portrait = engine.predict_probabilities(photo((480, 360), 0))
    assert set(sessions) == {None, (1, 192, 240, 3)}  # the any-shape one, made for the first other shape
    assert sessions[None].get_inputs()[0].shape == [1, "height", "width", 3]
    np.testing.assert_array_equal(engine.predict_probabilities(photo((480, 360), 0)), portrait)


@pytest.mark.parametrize("runtime", [ONNX_RUNTIME, LITERT])
def test_the_runtimes_answer_parallel_callers_as_they_answer_one(engines, runtime):
    photos = [photo(PHOTO_SHAPES[index % 3], index) for index in range(12)]
    alone = [engines[runtime].predict_probabilities(rgb) for rgb in photos]
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(engines[runtime].predict_probabilities, photos))
    for expected, got in zip(alone, together):
        np.testing.assert_array_equal(got, expected)


def test_model_runtime_environment_variable_chooses(tiny_bundle, monkeypatch):
    monkeypatch.setenv("MODEL_RUNTIME", "TensorFlow")
    assert SegmentationEngine(tiny_bundle.model, tiny_bundle.config).runtime == TENSORFLOW
    monkeypatch.setenv("MODEL_RUNTIME", "litert-float32")
    assert SegmentationEngine(tiny_bundle.model, tiny_bundle.config).runtime == LITERT_FLOAT32
    monkeypatch.delenv("MODEL_RUNTIME")
    assert SegmentationEngine(tiny_bundle.model, tiny_bundle.config).runtime == ONNX_RUNTIME  # the default

    monkeypatch.setenv("MODEL_RUNTIME", "onnx")
    with pytest.raises(ValueError, match="Unknown runtime 'onnx': choose one of onnxruntime, litert, litert-float32, "
                                         "litert-int8, tensorflow"):
        make_forward(tiny_bundle.model)


def test_without_litert_the_engine_serves_tensorflow_and_says_so(keras_model, tiny_bundle, monkeypatch, caplog):
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.startswith("ai_edge_litert"):
            raise ModuleNotFoundError("No module named 'ai_edge_litert'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with caplog.at_level(logging.WARNING, logger="demo.runtimes"):
        engine = SegmentationEngine(keras_model, tiny_bundle.config, runtime=LITERT)

    assert engine.runtime == TENSORFLOW
    assert "LiteRT is not available (ModuleNotFoundError: No module named 'ai_edge_litert')" in caplog.text
    assert engine.predict_probabilities(photo((360, 480), 0)).shape == (360, 480)


@pytest.fixture(scope="module")
def vgg16_unet():
    from training.models import build_model

    return build_model("vgg16-unet", input_size=(64, 64), encoder_weights="none")


def test_a_fixed_size_model_is_served_by_litert_at_its_one_input_shape(vgg16_unet):
    """The vgg16-unet's upsampling does not convert with dynamic height and width; fed one shape, it does."""
    config = serving_config((64, 64), "stretch", 16)
    served = SegmentationEngine(vgg16_unet, config, runtime=LITERT_FLOAT32)
    reference = SegmentationEngine(vgg16_unet, config, runtime=TENSORFLOW)

    assert served.runtime == LITERT_FLOAT32
    for shape in [(360, 480), (1000, 37)]:
        rgb = photo(shape, 3)
        np.testing.assert_allclose(served.predict_probabilities(rgb), reference.predict_probabilities(rgb), atol=1e-4)
    assert served._forward._dynamic is None  # every photo was stretched to the one shape


def test_a_shape_litert_cannot_convert_is_run_by_tensorflow(vgg16_unet, caplog):
    # The same network declared any-size: the any-shape conversion fails at start, a graph fixed to
    # the canonical shape serves those photos and TensorFlow the others.
    config = serving_config((64, 64), "keep_aspect", 32)
    with caplog.at_level(logging.WARNING, logger="demo.runtimes"):
        served = SegmentationEngine(vgg16_unet, config, runtime=LITERT_FLOAT32)
    reference = SegmentationEngine(vgg16_unet, config, runtime=TENSORFLOW)

    assert "LiteRT cannot run photos of any shape" in caplog.text and (
        "TensorFlow runs photos of other shapes than (1, 64, 64, 3)") in caplog.text
    assert served._forward._canonical is not None and served._forward._fallback is not None
    for shape in [(64, 64), (64, 128)]:
        rgb = photo(shape, 4)
        np.testing.assert_allclose(served.predict_probabilities(rgb), reference.predict_probabilities(rgb), atol=1e-4)


def test_logs_and_reports_name_how_the_onnx_graph_computes():
    from demo.runtimes import describe_runtime

    assert describe_runtime("onnxruntime", "int8") == "ONNX Runtime (int8 weights and activations, statically quantised)"
    assert describe_runtime("onnxruntime", "float16") == "ONNX Runtime (float16 weights, float32 arithmetic)"
    assert describe_runtime("litert", "int8") == "LiteRT (XNNPACK, float16 weights)"  # the ONNX record is not LiteRT's
