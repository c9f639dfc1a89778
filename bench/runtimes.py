"""CPU serving runtimes for one model: latency per photo and val IoU through the engine's own
pre- and post-processing, so only the forward pass differs."""
from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.latency import engine_end_to_end
from bench.timing import Latency, interleaved_durations_ms
from demo.engine import SegmentationEngine
from demo.imaging import load_rgb
from demo.loading import load_bundle
from demo.runtimes import (
    ARITHMETIC_NAMES,
    LITERT,
    LITERT_FLOAT32,
    LITERT_INT8,
    ONNX_RUNTIME,
    TENSORFLOW,
    CarriedGraphs,
    CarriedOnnxGraph,
    ConvertedGraphs,
    LiteRTForward,
    first_line,
    keras_model_of,
    make_forward,
    run_interpreter,
    tflite_flatbuffer,
    usable_cores,
)

IOU_TOLERANCE = 0.005  # a runtime qualifies for the app if its val IoU stays this close to TensorFlow's
REFERENCE = "TensorFlow graph (tf.function)"
SERVED = "ONNX Runtime, the bundle's ONNX graph (the app's runtime, MODEL_RUNTIME=onnxruntime)"
SERVED_LITERT = "LiteRT, float16 weights (MODEL_RUNTIME=litert: bundles without an ONNX graph)"
CONVERTED_AT_START = "LiteRT, float16 weights, converted from model.keras at start (a bundle without graphs)"


@dataclass
class RuntimeResult:
    name: str
    latency: Latency | None = None
    val_iou: float | None = None
    max_probability_change: float | None = None  # against TensorFlow, on the benchmark photo
    notes: str = ""
    error: str = ""
    int8: bool = False  # computes in int8: chosen on held-out drives, so val IoU is reported, not a criterion


class RuntimeEngine(SegmentationEngine):
    """The engine with another runtime's forward pass (same resize, padding, crop and resize back)."""

    def __init__(self, model, config, forward):
        super().__init__(model, config, runtime=TENSORFLOW)
        self._forward = forward


def tensorflow_forward(network, network_input, folder):
    return TENSORFLOW, "the engine with MODEL_RUNTIME=tensorflow"


def app_onnx_forward(network, network_input, folder):
    if not isinstance(network, CarriedOnnxGraph):
        raise RuntimeError("this bundle carries no ONNX graph (python -m training.export_graphs exports one)")
    return ONNX_RUNTIME, (f"the engine as the app serves it: the ONNX graph the bundle carries, "
                          f"{ARITHMETIC_NAMES[network.weights]} (demo/runtimes.py)")


def app_litert_forward(network, network_input, folder):
    if isinstance(network, CarriedGraphs):
        return LITERT, "the engine with MODEL_RUNTIME=litert: the LiteRT graph the bundle carries"
    return LITERT, "the engine with MODEL_RUNTIME=litert: this bundle carries no graphs, so converted at start"


def converted_litert_forward(network, network_input, folder):
    """The app's runtime for a bundle without graphs: converted from model.keras at start."""
    forward, _ = make_forward(keras_model_of(network), LITERT, (1, *network_input, 3))
    return forward, "demo.runtimes.ConvertedGraphs, as for a bundle without graphs"


def app_litert_int8_forward(network, network_input, folder):
    return LITERT_INT8, "the engine with MODEL_RUNTIME=litert-int8: a graph fixed to 4:3 photos' shape"


def int8_any_shape_forward(network, network_input, folder):
    """Int8 weights with dynamic height and width: what photos of other shapes than 4:3 run in litert-int8."""
    return LiteRTForward(ConvertedGraphs(keras_model_of(network), weights="int8"), canonical_shape=None), \
        "demo.runtimes.ConvertedGraphs"


def app_litert_float32_forward(network, network_input, folder):
    return LITERT_FLOAT32, "the engine with MODEL_RUNTIME=litert-float32"


def xla_forward(network, network_input, folder):
    import tensorflow as tf

    model = keras_model_of(network)
    graph = tf.function(lambda batch: model(batch, training=False), jit_compile=True)
    return (lambda batch: graph(batch).numpy()), ""


def tflite_file(network, network_input, folder, weights: str) -> tuple[Path, str]:
    """The forward pass converted for one input shape to a .tflite file with `weights` "float32" or
    "int8" (as `tflite_flatbuffer` stores them), once per variant."""
    path = Path(folder) / ("model.tflite" if weights == "float32" else f"model_{weights}.tflite")
    if path.exists():
        return path, "the same .tflite file as above"
    started = time.perf_counter()
    path.write_bytes(tflite_flatbuffer(keras_model_of(network), (1, *network_input, 3), weights=weights))
    return path, f"converted in {time.perf_counter() - started:.1f} s, {path.stat().st_size / 2**20:.1f} MiB"


def interpreter_forward(interpreter):
    interpreter.allocate_tensors()
    return lambda batch: run_interpreter(interpreter, np.asarray(batch, np.float32))


def tflite_forward(network, network_input, folder, weights: str = "float32"):
    """The TFLite interpreter that ships inside TensorFlow."""
    import tensorflow as tf

    path, notes = tflite_file(network, network_input, folder, weights)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=usable_cores())
    if caught:  # TF 2.21 deprecates this interpreter: quote its own words (first two sentences)
        message = " ".join(str(caught[0].message).split())
        notes += "; TF warns: \"" + ". ".join(message.split(". ")[:2]).rstrip(".") + ".\""
    return interpreter_forward(interpreter), notes


def tflite_int8_forward(network, network_input, folder):
    return tflite_forward(network, network_input, folder, weights="int8")


def litert_dynamic_forward(network, network_input, folder):
    """The app's LiteRT forward with no canonical shape: every photo runs the any-shape graph, as
    photos not fed at the training frames' shape do in the app."""
    import importlib.metadata

    return LiteRTForward(ConvertedGraphs(keras_model_of(network), weights="float32"), canonical_shape=None), \
        f"ai-edge-litert {importlib.metadata.version('ai-edge-litert')}; demo.runtimes.LiteRTForward"


def onnx_file(network, network_input, folder) -> tuple[Path, str]:
    """Keras' ONNX export (tf2onnx underneath), once."""
    import tensorflow as tf

    model = keras_model_of(network)
    path = Path(folder) / "model.onnx"
    if path.exists():
        return path, "the same .onnx file as above"
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
        model.export(path, format="onnx", verbose=False,
                     input_signature=[tf.TensorSpec((1, *network_input, 3), tf.float32, name="image")])
    return path, f"converted in {time.perf_counter() - started:.1f} s, {path.stat().st_size / 2**20:.1f} MiB"


def onnxruntime_forward(network, network_input, folder, spinning: bool = True):
    """ONNX Runtime on the CPU; by default its worker threads may spin while a pass runs; they stop
    when it returns, as the app's (spinning on after it would slow whichever runtime is timed next)."""
    import onnxruntime

    path, notes = onnx_file(network, network_input, folder)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = usable_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return (lambda batch: session.run(None, {input_name: np.asarray(batch, np.float32)})[0]), \
        f"onnxruntime {onnxruntime.__version__}; {notes}"


def onnxruntime_without_spinning_forward(network, network_input, folder):
    # Spinning threads compete for the cores with everything else the app runs (the web server).
    return onnxruntime_forward(network, network_input, folder, spinning=False)


# name -> builder(the bundle's network, network_input, scratch folder) -> (a forward pass, or an engine
# runtime name; notes)
RUNTIMES = {
    REFERENCE: tensorflow_forward,
    SERVED: app_onnx_forward,
    SERVED_LITERT: app_litert_forward,
    CONVERTED_AT_START: converted_litert_forward,
    "LiteRT, float32 (MODEL_RUNTIME=litert-float32)": app_litert_float32_forward,
    "LiteRT float32, dynamic height and width": litert_dynamic_forward,
    "LiteRT, int8 weights, fixed shape (MODEL_RUNTIME=litert-int8)": app_litert_int8_forward,
    "LiteRT, int8 weights, dynamic height and width (what litert-int8 runs for other shapes)":
        int8_any_shape_forward,
    "XLA (tf.function, jit_compile=True)": xla_forward,
    "TFLite float32 (tf.lite.Interpreter, XNNPACK)": tflite_forward,
    "TFLite dynamic-range int8 (tf.lite.Interpreter)": tflite_int8_forward,
    "ONNX Runtime float32, a graph exported for the one shape": onnxruntime_forward,
    "ONNX Runtime float32, threads not spinning": onnxruntime_without_spinning_forward,
}


# Runtimes that need TensorFlow loaded in the serving process: not candidates for the app, which
# serves without it (less memory and a faster start: BENCHMARKS.md, section 6).
INSIDE_TENSORFLOW = {REFERENCE, "XLA (tf.function, jit_compile=True)", "TFLite float32 (tf.lite.Interpreter, XNNPACK)",
                     "TFLite dynamic-range int8 (tf.lite.Interpreter)"}
assert INSIDE_TENSORFLOW <= set(RUNTIMES)


def measure_runtimes(bundle, photo_path: Path, data_dir: Path, repeats: int, warmup: int) -> list[RuntimeResult]:
    """Every runtime on `bundle`: latency of the photo end to end (all runtimes timed in interleaved
    rounds), and val IoU at the bundle's threshold."""
    from bench.bundles import network_input_size
    from training.evaluate import evaluate_engine

    photo = load_rgb(photo_path)
    # Converted runtimes are built for one input shape: the shape 480x360 photos (and CamVid frames) are fed at.
    network_input = network_input_size(bundle.config, *photo.shape[:2])
    reference_probabilities = SegmentationEngine(bundle.model, bundle.config, TENSORFLOW).predict_probabilities(photo)
    # The LiteRT row serves the LiteRT graphs the bundle carries, as MODEL_RUNTIME=litert does.
    networks = {SERVED_LITERT: load_bundle(bundle.path, runtime=LITERT).model}
    results, engines = {name: RuntimeResult(name) for name in RUNTIMES}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, build in RUNTIMES.items():
            network = networks.get(name, bundle.model)
            try:
                forward, results[name].notes = build(network, network_input, folder)
                engine = SegmentationEngine(network, bundle.config, forward) if isinstance(forward, str) else \
                    RuntimeEngine(network, bundle.config, forward)
                if engine.runtime != (forward if isinstance(forward, str) else TENSORFLOW):
                    raise RuntimeError(f"the engine fell back to {engine.runtime} (see the log)")
                results[name].int8 = getattr(network, "weights", None) == "int8" and engine.runtime == ONNX_RUNTIME
                results[name].max_probability_change = float(np.abs(
                    engine.predict_probabilities(photo) - reference_probabilities).max())
                engines[name] = engine
            except Exception as error:  # a runtime that cannot convert or run is a result too
                results[name].error = first_line(error)[:300]
        durations = interleaved_durations_ms(
            {name: lambda engine=engine: engine_end_to_end(engine, photo_path) for name, engine in engines.items()},
            repeats, warmup)
        for name, engine in engines.items():
            results[name].latency = Latency.of(durations[name])
            results[name].val_iou = evaluate_engine(engine, data_dir, "val")["metrics"]["iou"]
    return list(results.values())


def qualified(results: list[RuntimeResult]) -> list[RuntimeResult]:
    """The runtimes the app could serve, fastest first: their val IoU within IOU_TOLERANCE of
    TensorFlow's, and not running inside TensorFlow (`INSIDE_TENSORFLOW`)."""
    reference = next(result for result in results if result.name == REFERENCE)
    if reference.val_iou is None:
        return []
    return sorted((result for result in results if result.latency is not None and result.val_iou is not None
                   and result.name not in INSIDE_TENSORFLOW
                   and abs(result.val_iou - reference.val_iou) <= IOU_TOLERANCE),
                  key=lambda result: result.latency.median)


def recommend(results: list[RuntimeResult]) -> tuple[RuntimeResult | None, list[RuntimeResult]]:
    """The fastest qualified runtime, and the other qualified ones this run cannot tell from it
    (their latency quartiles overlap its own)."""
    candidates = qualified(results)
    if not candidates:
        return None, []
    fastest, others = candidates[0], candidates[1:]
    return fastest, [result for result in others if result.latency.quartiles[0] <= fastest.latency.quartiles[1]]
