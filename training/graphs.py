"""Serving graphs converted from a bundle's model.keras: an ONNX graph and LiteRT graphs (docs/bundle.md).

The app serves these graphs without importing TensorFlow or Keras (demo/runtimes.py): the ONNX
graph with ONNX Runtime (the fastest measured, BENCHMARKS.md section 4), else the LiteRT ones. For
fully convolutional models each is one graph with dynamic height and width (named "height" and
"width" in the ONNX graph, so a session can fix them to the shape most photos come at); for a
model with one input size, a graph for that size. Both store their weights as float16 (half the
file; arithmetic is float32), unless a `Calibration` makes the ONNX graph compute in int8: its
activation ranges are measured on training frames (`int8_onnx_graph`), so that step needs the
dataset. Each graph records inside itself the SHA-256 of the model.keras it was converted from and
its input shape; config.json records each file's SHA-256 (`serving_graphs`), and the model card
lists them. model.keras stays the source of truth: `training.bundle` converts the graphs whenever
it saves a model, and `python -m training.export_graphs` refreshes them.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from demo.bundle import BundleConfig, BundleError
from demo.bundle_files import sha256_of
from demo.engine import canonical_input_shape, feed_size, pad_to_multiple, resize_image
from demo.graphs import graph_shapes, load_keras_model
from demo.runtimes import (
    GRAPH_SOURCE_METADATA,
    GRAPH_WEIGHTS,
    LITERT,
    ONNX_DIMENSIONS,
    ONNX_RUNTIME,
    CarriedOnnxGraph,
    first_line,
    release_freed_memory,
    run_interpreter,
    tflite_flatbuffer,
)
from training.data import DEFAULT_GROUP_PATTERN, find_pairs, read_pair

logger = logging.getLogger(__name__)

# What the carried LiteRT graphs are (the record's "runtime" and "weights"; the ONNX graph's entry names its own).
GRAPH_RUNTIME = "LiteRT (XNNPACK), float16 weights, float32 arithmetic"
GRAPH_SUFFIXES = (".tflite", ".onnx")  # the files of serving graphs in a bundle
CALIBRATION_FRAMES = 64  # training frames an int8 ONNX graph's activation ranges are measured on
# How an int8 graph's activation ranges are taken from the calibration frames, both by ONNX Runtime's MinMax
# calibrator: "minmax" keeps each tensor's extremes over all frames, "mean-minmax" the mean over frames of each
# frame's extremes (less swayed by one frame's outlier). Its histogram calibrators (percentile, entropy) are
# not offered: they hold every activation of every frame in memory (over 16 GB for 64 frames at 312x416) and
# make symmetric ranges, or, asked for asymmetric ones, clip negative activations (onnxruntime issue 10571).
CALIBRATION_METHODS = ("minmax", "mean-minmax")


@dataclass(frozen=True)
class Calibration:
    """How to make the ONNX graph int8: the CamVid root whose training frames measure the activation
    ranges, the method, and the scale frames are fed at (None: the bundle's own feed scale). Calibrate at
    the scale the app will feed, since activations' extremes move a little with scale (measured:
    docs/model_history.md, round 10)."""
    data_dir: Path
    method: str = "minmax"
    feed_size: tuple[int, int] | None = None


def graph_file_name(shape: tuple | None, suffix: str = ".tflite") -> str:
    return f"graph_{shape[1]}x{shape[2]}{suffix}" if shape else f"graph_any_shape{suffix}"


def onnx_graph(model, shape: tuple | None, source: dict, float16_weights: bool = True) -> bytes:
    """The model's inference graph in ONNX (Keras' export, tf2onnx underneath), with its free height
    and width named `ONNX_DIMENSIONS`, its weights stored as float16 (`with_float16_weights`; float32
    with `float16_weights=False`) and `source` stored as JSON in its metadata."""
    import tempfile
    import warnings

    import onnx
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
            model.export(path, format="onnx", verbose=False,
                         input_signature=[tf.TensorSpec(shape or (1, None, None, 3), tf.float32, name="image")])
        graph = onnx.load(path)
    if shape is None:
        for tensor in (*graph.graph.input, *graph.graph.output):
            for dimension, name in zip(tensor.type.tensor_type.shape.dim[1:3], ONNX_DIMENSIONS):
                dimension.dim_param = name
    if float16_weights:
        with_float16_weights(graph)
    graph.metadata_props.add(key=GRAPH_SOURCE_METADATA, value=json.dumps(source))
    return graph.SerializeToString()


def int8_onnx_graph(model, shape: tuple | None, source: dict, frames: list[np.ndarray],
                    method: str = "minmax") -> bytes:
    """`onnx_graph` with int8 arithmetic: ONNX Runtime's static quantisation (QDQ format) with int8
    weights per output channel and uint8 activations whose ranges `method` (CALIBRATION_METHODS) takes
    from what `frames` produce (calibration photos as the engine feeds them, (1, H, W, 3) float32).

    Weights keep 7 bits (`reduce_range`): CPUs without VNNI multiply uint8 by int8 in 16-bit sums
    that 8-bit weights can overflow. ONNX Runtime runs the quantised convolutions as QLinearConv; the
    speed and held-out IoU against the float graph are in docs/model_history.md (round 9).
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self):
            self._frames = iter(frames)

        def get_next(self):
            frame = next(self._frames, None)
            return None if frame is None else {"image": frame}

    with tempfile.TemporaryDirectory() as scratch:
        float_path, prepared, quantised = (Path(scratch) / name
                                           for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        float_path.write_bytes(onnx_graph(model, shape, source, float16_weights=False))
        # Shapes inferred and the graph optimised by ONNX Runtime before quantising, as its documentation
        # advises; its symbolic shape inference would need sympy, and ONNX's own suffices here.
        quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(quantised), Frames(), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"CalibMovingAverage": method == "mean-minmax"})
        graph = onnx.load(quantised)
    del graph.metadata_props[:]  # the source again, once, whatever the quantiser kept
    graph.metadata_props.add(key=GRAPH_SOURCE_METADATA, value=json.dumps(source))
    return graph.SerializeToString()


def calibration_frames(data_dir: Path, config: BundleConfig, count: int = CALIBRATION_FRAMES) -> list[np.ndarray]:
    """`count` frames spread evenly over `data_dir`'s training split, each resized and padded as the
    engine feeds a photo of its size when `config` is served: what the int8 graph's activation ranges are
    measured on. An images/ and masks/ folder is split as the bundle's run split it (its group pattern)."""
    pairs = find_pairs(data_dir, "train", config.training.get("group_pattern", DEFAULT_GROUP_PATTERN))
    chosen = [pairs[index] for index in np.unique(np.linspace(0, len(pairs) - 1, count).round().astype(int))]
    frames = []
    for pair in chosen:
        image, _ = read_pair(pair)
        resized = resize_image(image, feed_size(*image.shape[:2], config))
        frames.append(pad_to_multiple(resized, config.stride)[np.newaxis].astype(np.float32))
    return frames


def with_float16_weights(graph) -> None:
    """Store `graph`'s float32 weights as float16, each widened back by a Cast node: half the file,
    as the LiteRT graphs. ONNX Runtime folds the casts into float32 weights when it loads the graph,
    so the arithmetic stays float32 (BENCHMARKS.md section 4 times it against a float32 graph)."""
    from onnx import TensorProto, helper, numpy_helper

    weights, casts = [], []
    for weight in graph.graph.initializer:
        if weight.data_type != TensorProto.FLOAT or int(np.prod(weight.dims)) < 16:  # scalars, shapes: as they are
            weights.append(weight)
            continue
        narrow = f"{weight.name}__float16"
        weights.append(numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float16), narrow))
        casts.append(helper.make_node("Cast", [narrow], [weight.name], to=TensorProto.FLOAT))
    nodes = list(graph.graph.node)
    del graph.graph.initializer[:], graph.graph.node[:]
    graph.graph.initializer.extend(weights)
    graph.graph.node.extend(casts + nodes)  # before every use: the node list stays in dependency order


def with_source(flatbuffer: bytes, source: dict) -> bytes:
    """The graph with `source` stored as JSON in its metadata (`GRAPH_SOURCE_METADATA`), which
    `demo.runtimes.graph_source` reads back without TensorFlow."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.buffers.append(schema.BufferT(data=np.frombuffer(json.dumps(source).encode(), np.uint8)))
    model.metadata = [*(model.metadata or []),
                      schema.MetadataT(name=GRAPH_SOURCE_METADATA, buffer=len(model.buffers) - 1)]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def difference_from_keras(name: str, answer: np.ndarray, expected: np.ndarray) -> float:
    """The largest difference of a graph's `answer` on the probe image from model.keras' `expected`.
    BundleError if its shape differs: tf2onnx once wrote a graph whose final Squeeze its optimiser had
    dropped, answering (1, 1, H, W, 1), and subtracting would have broadcast that away."""
    if answer.shape != expected.shape:
        raise BundleError(f"{name} answered the probe image with shape {answer.shape} where model.keras "
                          f"answers {expected.shape}")
    return float(np.max(np.abs(answer - expected)))


def write_graphs(folder: Path, config: BundleConfig, calibration: Calibration | None = None,
                 onnx_optional: bool = False) -> dict:
    """Convert `folder`/model.keras into the graphs the app needs, written into `folder`; return
    config.json's record of them. The Keras model is read back from the file, in safe mode, so
    the graphs are what that file computes; each graph's largest difference from it on a probe
    image is recorded. With `calibration`, the ONNX graph computes in int8, calibrated on training
    frames (`int8_onnx_graph`). With `onnx_optional`, an ONNX graph that cannot be made is left out
    (the app then serves the LiteRT graphs) and the log says why; otherwise BundleError."""
    from ai_edge_litert.interpreter import Interpreter

    model = load_keras_model(folder)
    probe_shape = canonical_input_shape(config)
    probe = np.random.default_rng(0).uniform(0, 255, probe_shape).astype(np.float32)
    expected = model(probe, training=False).numpy()
    files = {}
    for shape in graph_shapes(config):
        input_shape = list(shape) if shape else None
        try:
            flatbuffer = tflite_flatbuffer(model, shape or (1, None, None, 3), weights=GRAPH_WEIGHTS[LITERT])
        except Exception as error:  # an op the converter lacks, say
            raise BundleError(f"the LiteRT converter failed for input {shape or 'of any shape'}: "
                              f"{first_line(error)}") from error
        flatbuffer = with_source(flatbuffer, {"model_sha256": config.model_sha256, "input_shape": input_shape})
        release_freed_memory()
        interpreter = Interpreter(model_content=flatbuffer)
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], probe_shape, strict=False)
        interpreter.allocate_tensors()
        name = graph_file_name(shape)
        difference = difference_from_keras(name, run_interpreter(interpreter, probe), expected)
        (folder / name).write_bytes(flatbuffer)
        files[name] = {"input_shape": input_shape, "sha256": sha256_of(folder / name), "bytes": len(flatbuffer),
                       "max_difference_from_keras": round(difference, 4)}
    try:
        files.update(write_onnx_graph(folder, config, model, probe, expected, calibration))
    except BundleError as error:
        if not onnx_optional:
            raise
        logger.warning("%s gets no ONNX graph (%s); the app will serve its LiteRT graphs. Retry with: "
                       "python -m training.export_graphs BUNDLE_DIR", folder, error)
    return {"runtime": GRAPH_RUNTIME, "weights": GRAPH_WEIGHTS[LITERT], "model_sha256": config.model_sha256,
            "files": files}


def write_onnx_graph(folder: Path, config: BundleConfig, model, probe: np.ndarray, expected: np.ndarray,
                     calibration: Calibration | None = None) -> dict:
    """The ONNX graph of `model` written into `folder` (int8 if `calibration` is given), and its
    entry in config.json's record."""
    shape = None if not config.fixed_input else canonical_input_shape(config)
    input_shape = list(shape) if shape else None
    source = {"model_sha256": config.model_sha256, "input_shape": input_shape}
    details = {"weights": "float16"}
    frames = None
    if calibration is not None:
        fed = config.fed_at(calibration.feed_size) if calibration.feed_size else config
        frames = calibration_frames(calibration.data_dir, fed)
        details = {"weights": "int8", "activations": "uint8",
                   "calibration": {"split": "train", "frames": len(frames), "feed_size": list(fed.input_size),
                                   "method": calibration.method}}
    name = graph_file_name(shape, ".onnx")
    for attempt in (1, 2):
        try:
            data = (onnx_graph(model, shape, source) if frames is None
                    else int8_onnx_graph(model, shape, source, frames, calibration.method))
        except Exception as error:  # an op tf2onnx or the quantiser lacks, say
            raise BundleError(f"the ONNX export failed for input {shape or 'of any shape'}: "
                              f"{first_line(error)}") from error
        release_freed_memory()
        session = CarriedOnnxGraph(data, shape, keras_model=lambda: model).session
        answer = session.run(None, {session.get_inputs()[0].name: probe})[0]
        if answer.shape == expected.shape or attempt == 2:
            break
        # tf2onnx now and then drops the graph's final Squeeze (docs/model_history.md,
        # probe 21); converting again has mended it each time seen. A second wrong graph is refused below.
        logger.warning("%s answered the probe image with shape %s where model.keras answers %s: converting again",
                       name, answer.shape, expected.shape)
    difference = difference_from_keras(name, answer, expected)
    (folder / name).write_bytes(data)
    return {name: {"runtime": ONNX_RUNTIME, **details, "input_shape": input_shape,
                   "sha256": sha256_of(folder / name), "bytes": len(data),
                   "max_difference_from_keras": round(difference, 4)}}
