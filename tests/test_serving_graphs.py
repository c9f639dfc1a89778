"""The graphs a bundle carries: written with it, served without TensorFlow, refused when wrong.

A refused graph never costs the visitor an answer: a refused ONNX graph leaves the LiteRT graphs
served, refused LiteRT graphs leave converting model.keras (the path every bundle took before);
the log says so, and the probabilities are right.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from demo.bundle import CONFIG_FILE, GRAPHS_KEY, MODEL_FILE, BundleConfig, BundleError, TargetClass
from demo.bundle_files import sha256_of
from demo.graphs import graph_shapes, load_keras_model
from demo.hub import HUB_PATTERNS
from demo.loading import DEFAULT_BUNDLE_DIR, load_bundle
from demo.engine import SegmentationEngine
from demo.runtimes import (
    GRAPH_SOURCE_METADATA,
    LITERT,
    ONNX_RUNTIME,
    TENSORFLOW,
    CarriedGraphs,
    CarriedOnnxGraph,
    graph_source,
)
from helpers import REPO_ROOT, make_tiny_bundle
from training.export_graphs import main as export_graphs_main

# Photo shapes fed at the canonical shape (4:3), on their side, 16:9, 9:16 and odd ones.
PHOTO_SHAPES = [(360, 480), (480, 360), (1080, 1920), (1920, 1080), (37, 1000), (1, 1)]
ONNX_GRAPH = "graph_any_shape.onnx"


def photo(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def read_config(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / CONFIG_FILE).read_text())


def write_config(bundle_dir: Path, config: dict) -> None:
    (bundle_dir / CONFIG_FILE).write_text(json.dumps(config, indent=2))


@pytest.fixture
def bundle_copy(tiny_bundle_dir, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


@pytest.fixture(scope="module")
def keras_reference(tiny_bundle_dir):
    return SegmentationEngine(load_keras_model(tiny_bundle_dir), BundleConfig.from_dict(read_config(tiny_bundle_dir)),
                              runtime=TENSORFLOW)


def test_a_new_bundle_carries_graphs_converted_from_its_own_model(tiny_bundle_dir):
    config = read_config(tiny_bundle_dir)
    record = config[GRAPHS_KEY]
    assert record["model_sha256"] == config["model_sha256"] == sha256_of(tiny_bundle_dir / "model.keras")
    # One graph per runtime, for any height and width.
    assert sorted(record["files"]) == [ONNX_GRAPH, "graph_any_shape.tflite"]
    assert [entry["input_shape"] for entry in record["files"].values()] == [None, None]
    assert graph_shapes(BundleConfig.from_dict(config)) == [None]
    for name, entry in record["files"].items():
        data = (tiny_bundle_dir / name).read_bytes()
        assert sha256_of(tiny_bundle_dir / name) == entry["sha256"] and len(data) == entry["bytes"]
        source = (CarriedOnnxGraph(data, None, keras_model=None).source() if name == ONNX_GRAPH
                  else graph_source(data))
        assert source == {"model_sha256": config["model_sha256"], "input_shape": entry["input_shape"]}
    for entry in record["files"].values():
        assert entry["max_difference_from_keras"] < 0.05  # both store float16 weights
    assert record["files"][ONNX_GRAPH]["runtime"] == ONNX_RUNTIME and record["files"][ONNX_GRAPH]["weights"] == "float16"
    import onnx

    # Its weights are stored as float16 (the size of the LiteRT graph), each widened by a Cast node.
    stored = onnx.load(tiny_bundle_dir / ONNX_GRAPH).graph.initializer
    weights = [weight for weight in stored if int(np.prod(weight.dims)) >= 16]
    assert weights and {weight.data_type for weight in weights} == {onnx.TensorProto.FLOAT16}


def test_the_onnx_graph_answers_as_model_keras_does_at_every_shape(tiny_bundle, keras_reference):
    assert isinstance(tiny_bundle.model, CarriedOnnxGraph)  # the default runtime serves it
    served = SegmentationEngine(tiny_bundle.model, tiny_bundle.config)
    assert served.runtime == ONNX_RUNTIME
    for seed, shape in enumerate(PHOTO_SHAPES + PHOTO_SHAPES[::-1]):
        rgb = photo(shape, seed)
        carried = served.predict_probabilities(rgb)
        assert carried.shape == shape
        np.testing.assert_allclose(carried, keras_reference.predict_probabilities(rgb), atol=0.05)


def test_the_graphs_answer_as_model_keras_does_and_as_the_conversion_at_start_did(tiny_bundle_dir, keras_reference):
    bundle = load_bundle(tiny_bundle_dir, runtime=LITERT)
    assert isinstance(bundle.model, CarriedGraphs)
    served = SegmentationEngine(bundle.model, bundle.config, runtime=LITERT)
    converted = SegmentationEngine(keras_reference.model, bundle.config, runtime=LITERT)  # the older path
    for seed, shape in enumerate(PHOTO_SHAPES + PHOTO_SHAPES[::-1]):
        rgb = photo(shape, seed)
        carried = served.predict_probabilities(rgb)
        assert carried.shape == shape
        np.testing.assert_allclose(carried, keras_reference.predict_probabilities(rgb), atol=0.05)
        # The very graphs the app converted at start before: same numbers, so the same IoU.
        np.testing.assert_allclose(carried, converted.predict_probabilities(rgb), atol=1e-6)


def test_the_app_serves_the_graphs_without_importing_tensorflow_or_keras(tiny_bundle_dir):
    script = (
        "import json, logging, sys, numpy as np\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from demo.loading import resolve_bundle\n"
        "from demo.ui import build_demo\n"
        "from demo.engine import SegmentationEngine\n"
        "bundle = resolve_bundle()\n"
        "build_demo(bundle)\n"
        "engine = SegmentationEngine(bundle.model, bundle.config)\n"
        "for shape in [(360, 480), (1080, 1920), (1920, 1080), (37, 1000)]:\n"
        "    engine.predict_probabilities(np.zeros((*shape, 3), np.uint8))\n"
        "print(json.dumps(sorted(name for name in sys.modules if name.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            env={**os.environ, "MODEL_DIR": str(tiny_bundle_dir)}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1]) == []
    assert "Serving the ONNX graph" in result.stderr


def _flip_a_byte(bundle: Path, name: str) -> None:
    data = bytearray((bundle / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / name).write_bytes(bytes(data))


def _truncate(bundle: Path, name: str) -> None:
    (bundle / name).write_bytes((bundle / name).read_bytes()[:4096])


def _record_the_files_hash(bundle: Path, name: str) -> None:
    config = read_config(bundle)
    config[GRAPHS_KEY]["files"][name]["sha256"] = sha256_of(bundle / name)
    write_config(bundle, config)


def _truncate_and_record_the_new_hash(bundle: Path, name: str) -> None:
    _truncate(bundle, name)
    _record_the_files_hash(bundle, name)


def _another_models_graph_recorded_as_this_ones(bundle: Path, name: str) -> None:
    """The graph of another model (same architecture and shapes, other weights), with its hash written
    into this bundle's record, as a careless copy-and-fix would: only the graph itself can tell."""
    other = make_tiny_bundle(bundle.parent / "other", seed=1)
    shutil.copyfile(other / name, bundle / name)
    _record_the_files_hash(bundle, name)


def _record_of_another_model(bundle: Path, name: str) -> None:
    config = read_config(bundle)
    config[GRAPHS_KEY]["model_sha256"] = "0" * 64  # converted before model.keras was replaced
    write_config(bundle, config)


def _origin_recorded_as_not_json(bundle: Path, name: str) -> None:
    """A graph whose origin entry is not JSON (a hand-edited or foreign export), its hash recorded."""
    import onnx

    graph = onnx.load(bundle / name)
    for entry in graph.metadata_props:
        if entry.key == GRAPH_SOURCE_METADATA:
            entry.value = "converted from model.keras, trust me"
    onnx.save(graph, bundle / name)
    _record_the_files_hash(bundle, name)


def _graph_missing(bundle: Path, name: str) -> None:
    (bundle / name).unlink()


def _an_int8_export(bundle: Path, name: str) -> None:
    """A bundle exported before the graphs stored float16 weights: its record names no weights."""
    config = read_config(bundle)
    del config[GRAPHS_KEY]["weights"]
    write_config(bundle, config)


@pytest.mark.parametrize("damage, expected", [
    (_flip_a_byte, "does not match its config.json"),
    (_truncate, "does not match its config.json"),
    (_truncate_and_record_the_new_hash, "is not a readable LiteRT graph"),
    (_another_models_graph_recorded_as_this_ones, "was converted from another model or for another input"),
    (_record_of_another_model, "they were converted from another model.keras"),
    (_graph_missing, "is missing from the bundle"),
    (_an_int8_export, "they store int8 weights, not the float16 ones the app serves"),
])
@pytest.mark.parametrize("name", ["graph_any_shape.tflite"])
def test_a_bad_graph_is_refused_and_the_model_is_served_right_the_old_way(
        bundle_copy, name, damage, expected, keras_reference, caplog):
    damage(bundle_copy, name)
    with caplog.at_level(logging.WARNING, logger="demo.loading"):
        bundle = load_bundle(bundle_copy, runtime=LITERT)

    assert not isinstance(bundle.model, CarriedGraphs)  # model.keras, loaded with Keras
    assert f"Refused the serving graphs {bundle_copy} carries" in caplog.text and expected in caplog.text
    assert "Loading its model.keras with Keras and converting it instead" in caplog.text
    engine = SegmentationEngine(bundle.model, bundle.config, runtime=LITERT)
    assert engine.runtime == LITERT
    for shape in PHOTO_SHAPES[:3]:
        rgb = photo(shape)
        np.testing.assert_allclose(engine.predict_probabilities(rgb), keras_reference.predict_probabilities(rgb),
                                   atol=0.05)


def _an_export_without_onnx(bundle: Path, name: str) -> None:
    """A bundle exported before bundles carried an ONNX graph."""
    config = read_config(bundle)
    del config[GRAPHS_KEY]["files"][name]
    write_config(bundle, config)
    (bundle / name).unlink()


@pytest.mark.parametrize("damage, expected", [
    (_flip_a_byte, "does not match its config.json"),
    (_truncate_and_record_the_new_hash, "ONNX Runtime could not run graph_any_shape.onnx"),
    (_another_models_graph_recorded_as_this_ones, "was converted from another model or for another input"),
    (_origin_recorded_as_not_json, "ONNX Runtime could not run graph_any_shape.onnx"),
    (_graph_missing, "is missing from the bundle"),
    (_an_export_without_onnx, "it carries no ONNX graph"),
])
def test_a_bad_onnx_graph_is_refused_and_the_litert_graphs_serve(bundle_copy, damage, expected, keras_reference,
                                                                 caplog):
    damage(bundle_copy, ONNX_GRAPH)
    with caplog.at_level(logging.WARNING, logger="demo.loading"):
        bundle = load_bundle(bundle_copy)

    assert isinstance(bundle.model, CarriedGraphs)
    assert f"No ONNX graph of {bundle_copy} can be served" in caplog.text and expected in caplog.text
    assert "serving LiteRT instead" in caplog.text and "Refused" not in caplog.text
    engine = SegmentationEngine(bundle.model, bundle.config)
    assert engine.runtime == LITERT
    rgb = photo((360, 480))
    np.testing.assert_allclose(engine.predict_probabilities(rgb), keras_reference.predict_probabilities(rgb), atol=0.05)


def test_without_onnx_runtime_installed_the_litert_graphs_serve(tiny_bundle_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, as where it is not installed
    with caplog.at_level(logging.WARNING, logger="demo.loading"):
        bundle = load_bundle(tiny_bundle_dir)
    assert isinstance(bundle.model, CarriedGraphs) and "ONNX Runtime cannot be imported" in caplog.text
    assert SegmentationEngine(bundle.model, bundle.config).runtime == LITERT


def test_a_bundle_without_graphs_is_served_the_old_way_and_the_log_says_so(bundle_copy, caplog):
    config = read_config(bundle_copy)
    for name in config.pop(GRAPHS_KEY)["files"]:
        (bundle_copy / name).unlink()
    write_config(bundle_copy, config)

    with caplog.at_level(logging.WARNING, logger="demo.loading"):
        bundle = load_bundle(bundle_copy)
    assert not isinstance(bundle.model, CarriedGraphs)
    assert "carries no serving graphs" in caplog.text and "python -m training.export_graphs" in caplog.text
    assert SegmentationEngine(bundle.model, bundle.config).runtime == LITERT


def test_model_runtime_tensorflow_runs_the_keras_model(tiny_bundle_dir, monkeypatch, keras_reference):
    monkeypatch.setenv("MODEL_RUNTIME", "tensorflow")
    bundle = load_bundle(tiny_bundle_dir)
    engine = SegmentationEngine(bundle.model, bundle.config)

    assert not isinstance(bundle.model, CarriedGraphs) and engine.runtime == TENSORFLOW
    rgb = photo((360, 480))
    np.testing.assert_array_equal(engine.predict_probabilities(rgb), keras_reference.predict_probabilities(rgb))


def test_export_graphs_adds_graphs_to_an_older_bundle(bundle_copy, capsys):
    from training.export_graphs import main

    config = read_config(bundle_copy)
    carried = config.pop(GRAPHS_KEY)
    for name in carried["files"]:
        (bundle_copy / name).unlink()
    write_config(bundle_copy, config)

    assert main([str(bundle_copy)]) == 0
    printed = capsys.readouterr().out
    assert "graph_any_shape.tflite: any height and width" in printed and f"{ONNX_GRAPH}: any height and width" in printed
    record = read_config(bundle_copy)[GRAPHS_KEY]
    # The LiteRT converter is deterministic: the same model.keras gives the same graph. The ONNX export
    # names some nodes by a counter that runs on in the process, so its graph is checked by its answers.
    name = "graph_any_shape.tflite"
    assert record["files"][name]["sha256"] == carried["files"][name]["sha256"]
    assert record["files"][ONNX_GRAPH]["max_difference_from_keras"] < 0.05
    assert isinstance(load_bundle(bundle_copy).model, CarriedOnnxGraph)
    assert isinstance(load_bundle(bundle_copy, runtime=LITERT).model, CarriedGraphs)
    assert not [path for path in bundle_copy.parent.iterdir() if path.name.startswith(".")]


def test_an_int8_export_computes_in_int8_calibrated_on_training_frames_and_is_served(bundle_copy, camvid_dir,
                                                                                      keras_reference, capsys):
    import onnx

    from training.evaluate import main as evaluate
    from training.export_graphs import main
    from training.feed_scales import main as feed_scales

    assert evaluate([str(bundle_copy), "--data-dir", str(camvid_dir), "--no-plots"]) == 0
    size = "x".join(map(str, read_config(bundle_copy)["input_size"]))
    assert main([str(bundle_copy), "--int8", str(camvid_dir)]) == 0
    assert f"{ONNX_GRAPH}: any height and width, int8 weights" in capsys.readouterr().out
    # The float graphs' evaluation no longer describes the bundle, so it cannot pass for the int8 graph's.
    assert feed_scales([str(bundle_copy), "--sizes", size]) == 1
    assert "evaluation_val.json measured files" in capsys.readouterr().err
    assert evaluate([str(bundle_copy), "--data-dir", str(camvid_dir), "--no-plots"]) == 0
    assert feed_scales([str(bundle_copy), "--sizes", size]) == 0
    capsys.readouterr()
    config = read_config(bundle_copy)
    entry = config[GRAPHS_KEY]["files"][ONNX_GRAPH]
    # Calibrated on the four training frames the fixture has, fed as the engine feeds a 480x360 photo.
    assert entry["weights"] == "int8" and entry["activations"] == "uint8"
    assert entry["calibration"] == {"split": "train", "frames": 4, "feed_size": config["input_size"],
                                    "method": "minmax"}
    # Really int8: every convolution's weights are int8 numbers, widened by a DequantizeLinear.
    graph = onnx.load(bundle_copy / ONNX_GRAPH).graph
    stored = {weight.name: weight.data_type for weight in graph.initializer}
    made_by = {output: node for node in graph.node for output in node.output}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    assert convolutions
    for convolution in convolutions:
        dequantize = made_by[convolution.input[1]]
        assert dequantize.op_type == "DequantizeLinear" and stored[dequantize.input[0]] == onnx.TensorProto.INT8
    # Activations too: the image is quantised on its way in.
    assert any(node.op_type == "QuantizeLinear" and node.input[0] == "image" for node in graph.node)

    bundle = load_bundle(bundle_copy)
    assert isinstance(bundle.model, CarriedOnnxGraph)
    served = SegmentationEngine(bundle.model, bundle.config)
    assert served.runtime == ONNX_RUNTIME
    # On real frames its error is a small part of how much model.keras' answer varies over the photo (this
    # untrained model answers 0.48-0.54): measured 0.1 of it; calibrated on frames scaled to 0-1, 0.8-1.0.
    from training.data import find_pairs, read_pair

    for pair in find_pairs(camvid_dir, "val"):
        rgb, _ = read_pair(pair)
        reference = keras_reference.predict_probabilities(rgb)
        assert np.abs(served.predict_probabilities(rgb) - reference).mean() < 0.25 * reference.std()
    for shape in PHOTO_SHAPES:
        assert served.predict_probabilities(photo(shape)).shape == shape


def activation_scales(graph_path: Path) -> list[float]:
    """Each quantised activation's scale in an int8 graph (its range / 255), in the graph's order (tf2onnx
    names some nodes by a counter, so two exports of one model differ in names, not in order)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(graph_path).graph
    stored = {weight.name: numpy_helper.to_array(weight) for weight in graph.initializer}
    return [float(stored[node.input[1]]) for node in graph.node
            if node.op_type == "QuantizeLinear" and node.input[0] not in stored]


def test_an_int8_export_calibrated_at_the_served_scale_on_the_mean_of_each_frames_extremes(bundle_copy, camvid_dir,
                                                                                             monkeypatch):
    import training.graphs as graphs_module

    fed_shapes = []
    quantise = graphs_module.int8_onnx_graph
    monkeypatch.setattr(graphs_module, "int8_onnx_graph", lambda model, shape, source, frames, method: (
        fed_shapes.append([frame.shape for frame in frames]), quantise(model, shape, source, frames, method))[1])
    for method in ("minmax", "mean-minmax"):
        assert export_graphs_main([str(bundle_copy), "--int8", str(camvid_dir), "--calibration", method,
                                   "--calibrate-at", "312x416"]) == 0
        config = read_config(bundle_copy)
        assert config[GRAPHS_KEY]["files"][ONNX_GRAPH]["calibration"] == {
            "split": "train", "frames": 4, "feed_size": [312, 416], "method": method}
        assert config["input_size"] == [180, 240]  # what the app feeds is not changed by calibrating
        scales = activation_scales(bundle_copy / ONNX_GRAPH)
        if method == "minmax":
            extremes = scales
    # The fixture's 480x360 frames fed as the engine feeds them at 312x416: resized, padded to the stride.
    assert fed_shapes == [[(1, 320, 416, 3)] * 4] * 2
    # A mean of extremes lies inside the extremes: no activation range is wider than minmax's, many narrower.
    assert len(scales) == len(extremes) > 0
    assert all(mean <= extreme * 1.001 for mean, extreme in zip(scales, extremes))
    assert sum(mean < extreme * 0.99 for mean, extreme in zip(scales, extremes)) >= len(scales) // 4


def test_calibration_choices_without_int8_are_refused(bundle_copy, capsys):
    from training.export_graphs import main

    with pytest.raises(SystemExit) as stopped:
        main([str(bundle_copy), "--calibrate-at", "312x416"])
    assert stopped.value.code == 2
    assert "give --int8 DATA_DIR too" in capsys.readouterr().err


def test_an_int8_export_without_training_frames_says_so_and_leaves_the_bundle_as_it_was(bundle_copy, tmp_path,
                                                                                         capsys):
    from training.export_graphs import main

    before = {path.name: path.read_bytes() for path in bundle_copy.iterdir()}
    assert main([str(bundle_copy), "--int8", str(tmp_path / "nowhere")]) == 1
    assert "No 'train' split in" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir()} == before
    assert not [path for path in bundle_copy.parent.iterdir() if path.name.startswith(".")]


def test_calibrating_a_fixed_size_model_at_another_scale_is_refused_before_any_work(bundle_copy, camvid_dir, capsys):
    from training.export_graphs import main

    config = read_config(bundle_copy)
    (bundle_copy / "config.json").write_text(json.dumps({**config, "resize": "stretch"}))
    before = {path.name: path.read_bytes() for path in bundle_copy.iterdir()}
    assert main([str(bundle_copy), "--int8", str(camvid_dir), "--calibrate-at", "312x416"]) == 1
    height, width = config["input_size"]
    # Named by its path: the check before the export (the calibration's own says "this bundle").
    assert f"{bundle_copy} holds a fixed-size model: it takes only {height}x{width}" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir()} == before
    assert not [path for path in bundle_copy.parent.iterdir() if path.name.startswith(".")]


def test_exporting_an_int8_bundle_again_without_frames_says_its_graph_is_float_now(bundle_copy, camvid_dir, capsys):
    from training.export_graphs import main

    assert main([str(bundle_copy), "--int8", str(camvid_dir)]) == 0
    assert main([str(bundle_copy)]) == 0
    assert "the ONNX graph was int8 and is float now" in capsys.readouterr().out
    assert read_config(bundle_copy)[GRAPHS_KEY]["files"][ONNX_GRAPH]["weights"] == "float16"


def onnx_export_fails(model, shape, source):
    raise RuntimeError("an op tf2onnx lacks")


def test_a_failed_export_leaves_the_bundle_as_it_was(bundle_copy, monkeypatch, capsys):
    import training.graphs as graphs_module

    before = {path.name: path.read_bytes() for path in bundle_copy.iterdir()}

    def converter_fails(model, input_shape, weights):
        raise RuntimeError("an op the converter lacks")

    monkeypatch.setattr(graphs_module, "tflite_flatbuffer", converter_fails)
    assert export_graphs_main([str(bundle_copy)]) == 1
    assert "the LiteRT converter failed for input of any shape: RuntimeError: an op the converter lacks" in (
        capsys.readouterr().err)
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir()} == before
    assert not [path for path in bundle_copy.parent.iterdir() if path.name.startswith(".")]

    monkeypatch.undo()

    monkeypatch.setattr(graphs_module, "onnx_graph", onnx_export_fails)
    assert export_graphs_main([str(bundle_copy)]) == 1
    assert "the ONNX export failed for input of any shape: RuntimeError: an op tf2onnx lacks" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir()} == before

    monkeypatch.undo()
    monkeypatch.setattr(graphs_module, "onnx_graph", graph_with_an_extra_axis(graphs_module.onnx_graph, times=2))
    assert export_graphs_main([str(bundle_copy)]) == 1
    assert "graph_any_shape.onnx answered the probe image with shape (1, 1, " in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in bundle_copy.iterdir()} == before


def graph_with_an_extra_axis(onnx_graph, times):
    """`onnx_graph` answering (1, 1, H, W, 1) on its first `times` calls: tf2onnx now and then drops the
    graph's final Squeeze."""
    calls = []

    def convert(model, shape, source):
        import onnx

        calls.append(shape)
        graph = onnx.load_from_string(onnx_graph(model, shape, source))
        if len(calls) > times:
            return graph.SerializeToString()
        output = graph.graph.output[0]
        graph.graph.node.append(onnx.helper.make_node("Unsqueeze", [output.name, "extra_axis"], ["with_extra_axis"]))
        graph.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1], np.int64), "extra_axis"))
        graph.graph.output.remove(output)
        graph.graph.output.append(onnx.helper.make_tensor_value_info("with_extra_axis", onnx.TensorProto.FLOAT, None))
        return graph.SerializeToString()

    return convert


def test_a_graph_answering_the_wrong_shape_once_is_converted_again(bundle_copy, monkeypatch, caplog):
    import onnxruntime

    import training.graphs as graphs_module

    monkeypatch.setattr(graphs_module, "onnx_graph", graph_with_an_extra_axis(graphs_module.onnx_graph, times=1))
    caplog.set_level(logging.WARNING)
    assert export_graphs_main([str(bundle_copy)]) == 0
    assert "graph_any_shape.onnx answered the probe image with shape (1, 1, " in caplog.text
    assert "converting again" in caplog.text
    session = onnxruntime.InferenceSession(str(bundle_copy / "graph_any_shape.onnx"))
    image = np.random.default_rng(0).uniform(0, 255, (1, 64, 96, 3)).astype(np.float32)
    assert session.run(None, {"image": image})[0].shape == (1, 64, 96, 1)


def test_training_keeps_the_litert_graphs_when_only_the_onnx_export_fails(tmp_path, monkeypatch, caplog):
    import training.graphs as graphs_module

    monkeypatch.setattr(graphs_module, "onnx_graph", onnx_export_fails)
    caplog.set_level(logging.WARNING)
    bundle_dir = make_tiny_bundle(tmp_path / "bundle")
    assert set(read_config(bundle_dir)[GRAPHS_KEY]["files"]) == {"graph_any_shape.tflite"}
    assert not list(bundle_dir.glob("*.onnx"))
    assert "gets no ONNX graph" in caplog.text and "python -m training.export_graphs" in caplog.text
    bundle = load_bundle(bundle_dir)
    assert isinstance(bundle.model, CarriedGraphs)  # served by the carried LiteRT graph, not converted at start


@pytest.mark.parametrize("architecture, input_size, resize", [
    ("efficientnet-lite0-unet", (64, 96), "keep_aspect"),  # a nested encoder model, stride 32
    ("unet-separable", (48, 64), "keep_aspect"),
    ("vgg16-unet", (64, 64), "stretch"),  # fixed size: one graph
])
def test_every_architecture_gets_graphs_that_answer_as_its_model(architecture, input_size, resize, tmp_path):
    from training.bundle import write_bundle
    from training.models import ARCHITECTURES, build_model

    options = {"encoder_weights": None} if ARCHITECTURES[architecture].pretrained_encoder else {}
    model = build_model(architecture, input_size=input_size, **options)
    config = BundleConfig(architecture=architecture, input_size=input_size, resize=resize,
                          stride=ARCHITECTURES[architecture].stride, target_class=TargetClass(8, "car"), threshold=0.5)
    bundle = load_bundle(write_bundle(tmp_path / architecture, model, config))

    assert isinstance(bundle.model, CarriedOnnxGraph)
    # One graph per runtime: fixed to the one input a stretching model takes, else for any height and width.
    name = f"graph_{input_size[0]}x{input_size[1]}" if resize == "stretch" else "graph_any_shape"
    assert sorted(bundle.config.serving_graphs["files"]) == [f"{name}.onnx", f"{name}.tflite"]
    reference = SegmentationEngine(model, bundle.config, runtime=TENSORFLOW)
    for runtime, network in [(ONNX_RUNTIME, bundle.model), (LITERT, load_bundle(bundle.path, runtime=LITERT).model)]:
        served = SegmentationEngine(network, bundle.config, runtime=runtime)
        assert served.runtime == runtime
        for shape in [(360, 480), (1080, 1920), (1920, 1080)]:
            rgb = photo(shape)
            np.testing.assert_allclose(served.predict_probabilities(rgb), reference.predict_probabilities(rgb),
                                       atol=0.05)


def test_the_graphs_travel_with_the_bundle_everywhere(tiny_bundle_dir):
    from training.deploy_space import space_files
    from training.model_card import build_model_card

    config = read_config(tiny_bundle_dir)
    card = str(build_model_card(BundleConfig.from_dict(config)))
    for name, entry in config[GRAPHS_KEY]["files"].items():
        assert f"`{name}`" in card and entry["sha256"][:16] in card
    assert {"*.tflite", "*.onnx"} <= set(HUB_PATTERNS)  # downloaded from the Hub, and preloaded by a Space's build
    default_graphs = read_config(DEFAULT_BUNDLE_DIR)[GRAPHS_KEY]["files"]
    assert {f"demo/default_model/{name}" for name in default_graphs} <= set(space_files())


def test_training_evaluate_measures_the_carried_graphs(bundle_copy, camvid_dir, monkeypatch, capsys):
    """Nothing is converted when the bundle carries its graphs: the evaluation runs what the app runs."""
    import demo.runtimes
    from training.evaluate import main

    def no_conversion(*args, **kwargs):
        raise AssertionError("evaluate converted model.keras instead of running the carried graphs")

    monkeypatch.setattr(demo.runtimes, "tflite_flatbuffer", no_conversion)
    assert main([str(bundle_copy), "--data-dir", str(camvid_dir), "--no-plots"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["runtime"] == ONNX_RUNTIME


def test_a_bundle_with_a_lambda_layer_is_refused_and_its_code_never_runs(tiny_bundle_dir, tmp_path):
    marker = tmp_path / "the-lambda-ran"
    # The layer's function leaves a file behind whenever it runs (as any code in a model file could).
    leave_marker = eval(f"lambda x: x if open({str(marker)!r}, 'w').close() is None else x")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(keras.layers.Lambda(leave_marker)(inputs)))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    model.save(bundle / MODEL_FILE)
    config = json.loads((tiny_bundle_dir / CONFIG_FILE).read_text())
    config["model_sha256"] = sha256_of(bundle / MODEL_FILE)  # the hash matches: only safe mode stands in the way
    (bundle / CONFIG_FILE).write_text(json.dumps(config))
    marker.unlink()  # building the model above ran it once

    with pytest.raises(BundleError, match=r"Refused to load .*model\.keras: it contains code \(a Lambda layer\)"):
        load_bundle(bundle)

    assert not marker.exists()
