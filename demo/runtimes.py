"""The network's forward pass on the CPU: an ONNX graph, LiteRT graphs, or TensorFlow.

BENCHMARKS.md (section 4, written by `python -m bench`) measures every runtime on the default
model through the engine: a photo's time end to end and the val IoU each gives. The app serves
the bundle's ONNX graph with ONNX Runtime (`OnnxRuntimeForward`): float or int8 (static
quantisation), it has measured faster than every LiteRT setting. Bundles without an ONNX graph are
served by LiteRT with float32 arithmetic (XNNPACK kernels, batch norm folded into the
convolutions) from a graph that stores its weights as float16 (half the file; XNNPACK widens
them once at load). LiteRT's int8 weights (dynamic-range quantisation) cost val IoU, and with
dynamic height and width they run far slower on the EfficientNet-Lite models (XNNPACK has no fast
int8-weight depthwise kernels); at a fixed shape, whether they beat float depends on the CPU (it
differed between the machines measured). A float graph with dynamic height and width runs as fast
as one fixed to a shape, so a fully convolutional model needs just that one graph for photos of
every shape.

Where the LiteRT graphs come from:
- `CarriedGraphs`: the graphs a bundle carries (written by `training.export_graphs` from its
  model.keras, checked by `demo.graphs.load_graphs`). Serving them imports neither TensorFlow
  nor Keras: the app starts in seconds and holds a fraction of the memory.
- `ConvertedGraphs`: converted from the Keras model by TensorFlow, the path for bundles that
  carry no graphs (older ones, a user's own) or whose graphs fail their checks.

- `CarriedOnnxGraph`: the ONNX graph a bundle carries, written beside them by the same command
  (float16 weights widened once at load, dynamic height and width), checked the same way. With
  `training.export_graphs --int8` it computes in int8 instead, its activation ranges calibrated
  on training frames: faster than the float graph on these CPUs (BENCHMARKS.md, section 4).

MODEL_RUNTIME chooses ("onnxruntime", "litert", "litert-float32", "litert-int8" or "tensorflow");
the last three always run the Keras model. A bundle with no usable ONNX graph is served by LiteRT,
and if LiteRT cannot be used, TensorFlow serves: the log says why each time.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

TENSORFLOW = "tensorflow"
ONNX_RUNTIME = "onnxruntime"  # the bundle's ONNX graph: float16 weights (float32 arithmetic), or int8 throughout
LITERT = "litert"  # float16 weights in the file, float32 arithmetic: what bundles carry
LITERT_FLOAT32 = "litert-float32"
LITERT_INT8 = "litert-int8"  # int8 weights (dynamic-range quantisation), float32 activations
RUNTIMES = (ONNX_RUNTIME, LITERT, LITERT_FLOAT32, LITERT_INT8, TENSORFLOW)
DEFAULT_RUNTIME = ONNX_RUNTIME
# Human names, for the page and the benchmark; the family alone where a table says how each graph computes.
RUNTIME_NAMES = {TENSORFLOW: "TensorFlow", ONNX_RUNTIME: "ONNX Runtime",
                 LITERT: "LiteRT (XNNPACK, float16 weights)",
                 LITERT_FLOAT32: "LiteRT (XNNPACK, float32)", LITERT_INT8: "LiteRT (XNNPACK, int8 weights)"}
RUNTIME_FAMILIES = {TENSORFLOW: "TensorFlow", ONNX_RUNTIME: "ONNX Runtime",
                    LITERT: "LiteRT", LITERT_FLOAT32: "LiteRT", LITERT_INT8: "LiteRT"}
# How a carried graph computes, by its record's "weights" (config.json's `serving_graphs`), in words.
ARITHMETIC_NAMES = {"float16": "float16 weights, float32 arithmetic", "float32": "float32",
                    "int8": "int8 weights and activations, statically quantised"}


def describe_runtime(runtime: str, onnx_weights: str | None = None) -> str:
    """The runtime's name for logs and reports; for ONNX Runtime, with how the bundle's graph computes
    (`onnx_weights`: its record's "weights", `demo.bundle.onnx_graph_weights`)."""
    if runtime == ONNX_RUNTIME and onnx_weights in ARITHMETIC_NAMES:
        return f"{RUNTIME_NAMES[runtime]} ({ARITHMETIC_NAMES[onnx_weights]})"
    return RUNTIME_NAMES.get(runtime, runtime)


# The names an ONNX graph gives its free input dimensions (`training.export_graphs`), which a
# session may fix to one shape (`OnnxRuntimeForward`).
ONNX_DIMENSIONS = ("height", "width")
# How each LiteRT runtime stores the graph's weights (`tflite_flatbuffer`'s `weights`).
GRAPH_WEIGHTS = {LITERT: "float16", LITERT_FLOAT32: "float32", LITERT_INT8: "int8"}

Forward = Callable[[np.ndarray], np.ndarray]  # (1, H, W, 3) float32 -> (1, H, W, 1) probabilities


def usable_cores() -> int:
    """Cores this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class TensorFlowForward:
    """One TensorFlow graph for inputs of every size, traced on first use."""

    def __init__(self, model):
        import tensorflow as tf

        self.graph = tf.function(lambda batch: model(batch, training=False),
                                 input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.graph(batch).numpy()


def tflite_flatbuffer(model, input_shape=(1, None, None, 3), weights: str = "float32") -> bytes:
    """The model's inference graph as a LiteRT (.tflite) flatbuffer; None dims stay dynamic.

    The graph is frozen first: fed the live concrete function, the converter keeps
    READ_VARIABLE ops, which XNNPACK then runs to all-NaN output without a word.
    `weights`: how the file stores them: "float32"; "float16" (widened at load, float32
    arithmetic); "int8" (dynamic-range quantisation, activations stay float).
    """
    if weights not in ("float32", "float16", "int8"):
        raise ValueError(f"weights must be float32, float16 or int8, not {weights!r}")

    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph = tf.function(lambda batch: model(batch, training=False)).get_concrete_function(
        tf.TensorSpec(input_shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(graph)], model)
    if weights != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if weights == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


class LiteRTForward:
    """The network in LiteRT, for photos of every shape.

    Float graphs with dynamic height and width run as fast as fixed ones in XNNPACK, so with
    `single_graph` every photo takes the any-shape graph, ready before the first photo (tensors
    re-planned, in milliseconds, when the shape changes). Otherwise (int8 weights, whose dynamic
    graph is much slower, or a model that takes one shape) photos fed at `canonical_shape` take a
    graph fixed to it and the others an any-shape graph made at the first that needs it. `graphs`
    supplies the graphs (`CarriedGraphs` or `ConvertedGraphs`); a shape no graph can take is run
    by TensorFlow. One pass at a time per `graphs` (its lock), however many engines share them.
    """

    def __init__(self, graphs, canonical_shape: tuple | None, any_shape: bool = True, single_graph: bool = False):
        self._graphs, self._any_shape = graphs, any_shape
        self._canonical_shape = tuple(canonical_shape) if canonical_shape else None
        self._canonical = self._fallback = None
        self._dynamic = graphs.ready_any_shape()
        if single_graph and any_shape and self._dynamic is None:
            self._prepare_any_shape(None)
        if self._dynamic is None and self._canonical_shape:
            self._canonical = graphs.interpreter(self._canonical_shape)
        self._lock = graphs.lock
        # Tensor plans made for photos so far: a carried any-shape graph comes planned at the canonical shape.
        planned = tuple(self._dynamic.get_input_details()[0]["shape"]) if self._dynamic is not None else None
        self.plans = 1 if self._canonical is not None or planned == self._canonical_shape else 0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            if self._canonical is not None and batch.shape == self._canonical_shape:
                return run_interpreter(self._canonical, batch)
            if self._dynamic is None and self._fallback is None:
                self._prepare_any_shape(batch.shape)
            if self._fallback is not None:
                return self._fallback(batch)
            planned = self._dynamic.get_input_details()[0]
            if tuple(planned["shape"]) != batch.shape:
                self._dynamic.resize_tensor_input(planned["index"], batch.shape, strict=False)
                self._dynamic.allocate_tensors()
                self.plans += 1
            return run_interpreter(self._dynamic, batch)

    def _prepare_any_shape(self, shape: tuple | None) -> None:
        """The any-shape graph, else TensorFlow for the shapes the fixed graph does not take: at
        start (`shape` None), or at the first photo fed at another shape than the canonical one."""
        if self._any_shape:
            try:
                logger.info("Converting the network for photos of any shape%s.",
                            f" (first photo fed at {shape[1:3]})" if shape else "")
                self._dynamic = self._graphs.interpreter(None)
                return
            except Exception as error:
                reason = first_line(error)
        else:
            reason = f"this model takes only {self._canonical_shape}"
        which = f"shape {shape}" if shape else "photos of any shape"
        others = f"other shapes than {self._canonical_shape}" if self._canonical_shape else "every shape"
        logger.warning("LiteRT cannot run %s (%s); TensorFlow runs photos of %s.", which, reason,
                       "that shape" if shape else others)
        self._fallback = TensorFlowForward(self._graphs.keras_model())


class ConvertedGraphs:
    """LiteRT graphs converted from a Keras model by TensorFlow (a second or two each), when asked for."""

    def __init__(self, model, weights: str, threads: int | None = None):
        self._model, self._weights, self._threads = model, weights, threads or usable_cores()
        self.lock = threading.Lock()

    def interpreter(self, shape: tuple | None):
        """A ready interpreter for (1, H, W, 3) `shape`, or with dynamic height and width for None."""
        from ai_edge_litert.interpreter import Interpreter

        flatbuffer = tflite_flatbuffer(self._model, shape or (1, None, None, 3), weights=self._weights)
        interpreter = Interpreter(model_content=flatbuffer, num_threads=self._threads)
        if shape:
            interpreter.allocate_tensors()
        release_freed_memory()
        return interpreter

    def ready_any_shape(self):
        return None  # converted at the first photo that needs it

    def keras_model(self):
        return self._model


class CarriedGraphs:
    """A bundle's own LiteRT graphs (float16 weights), checked and loaded by `demo.graphs.load_graphs`.

    `interpreters`: (1, H, W, 3) shape -> an interpreter planned for it, and None -> the any-shape
    graph (already run once, so its weights are packed before the first photo). `keras_model`
    loads the bundle's model.keras, for the runtimes that need it (TensorFlow, the other LiteRT ones);
    serving the graphs never calls it.
    """

    def __init__(self, interpreters: dict, keras_model: Callable[[], object]):
        self.interpreters, self._keras_model, self._loaded_model = interpreters, keras_model, None
        self.lock = threading.Lock()

    @property
    def fixed_shapes(self) -> list[tuple]:
        return [shape for shape in self.interpreters if shape is not None]

    def interpreter(self, shape: tuple | None):
        return self.interpreters[shape]

    def ready_any_shape(self):
        return self.interpreters.get(None)

    def keras_model(self):
        if self._loaded_model is None:
            self._loaded_model = self._keras_model()
        return self._loaded_model


class OnnxRuntimeForward:
    """The bundle's ONNX graph in ONNX Runtime, for photos of every shape.

    Photos fed at `canonical_shape` (4:3 ones, the most) run a session whose free height and
    width are fixed to it, which ONNX Runtime plans once and runs faster than the
    any-shape session (measured on 2 cores); a photo of another shape runs the session of the
    same graph left free, made when the first such photo comes. One pass at a time per graph (its lock).
    """

    def __init__(self, graph: "CarriedOnnxGraph", canonical_shape: tuple | None):
        self._graph = graph
        self._canonical_shape = tuple(canonical_shape) if canonical_shape else None
        if self._canonical_shape:
            graph.session_for(self._canonical_shape)  # made (and run once) by the bundle's check already

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        shape = self._canonical_shape if batch.shape == self._canonical_shape else None
        with self._graph.lock:
            session = self._graph.session_for(shape)
            return session.run(None, {session.get_inputs()[0].name: batch})[0]


class CarriedOnnxGraph:
    """A bundle's ONNX graph (float16 weights and float32 arithmetic, or int8 throughout: ONNX Runtime runs
    either as it is), checked and loaded by `demo.graphs.load_onnx_graph`.

    Sessions are made when first needed, one per shape asked for (`session_for`), the first at
    construction (for `first_shape`), so bytes ONNX Runtime cannot load fail here. `fixed_shape`
    is the one shape a graph of a fixed-size model takes (None: any); `weights`, how it computes, as
    its record says ("float16" or "int8", `ARITHMETIC_NAMES`).
    """

    def __init__(self, data: bytes, fixed_shape: tuple | None, keras_model: Callable[[], object],
                 first_shape: tuple | None = None, weights: str = "float16"):
        self._data, self.fixed_shape, self.weights = data, fixed_shape, weights
        self._keras_model, self._loaded_model = keras_model, None
        self.lock = threading.Lock()
        self._sessions: dict[tuple | None, object] = {}
        self.session_for(first_shape)

    @property
    def session(self):
        """The session that takes any height and width (for a fixed-size model's graph, its one shape)."""
        return self.session_for(None)

    def session_for(self, shape: tuple | None):
        """The session for (1, H, W, 3) inputs of `shape`, its free height and width fixed to it, or
        (None, or a fixed-size model's graph) the graph as it is. Callers serialise on `lock`."""
        key = None if shape is None or self.fixed_shape is not None else tuple(shape)
        if key not in self._sessions:
            self._sessions[key] = self.new_session(key)
        return self._sessions[key]

    def new_session(self, shape: tuple | None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = usable_cores()
        options.log_severity_level = 3  # errors only: its warnings about unused initialisers are noise here
        # Worker threads stop spinning when a pass returns, so they take no core from the web server
        # between photos: left spinning (the default), they slowed the next thing run, measured;
        # within a pass, spinning or not measured the same (BENCHMARKS.md, section 4).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        if shape:
            for name, size in zip(ONNX_DIMENSIONS, shape[1:3]):
                options.add_free_dimension_override_by_name(name, int(size))
        return onnxruntime.InferenceSession(self._data, options, providers=["CPUExecutionProvider"])

    def source(self) -> dict | None:
        """What the graph records of its origin (`GRAPH_SOURCE_METADATA`), or None."""
        import json

        any_session = next(iter(self._sessions.values()))  # every session holds the same metadata
        recorded = any_session.get_modelmeta().custom_metadata_map.get(GRAPH_SOURCE_METADATA)
        return json.loads(recorded) if recorded else None

    def keras_model(self):
        if self._loaded_model is None:
            self._loaded_model = self._keras_model()
        return self._loaded_model


def release_freed_memory() -> None:
    """Hand the converter's freed working memory back to the system (measured: hundreds of MB).

    glibc keeps freed heap pages for reuse; a serving process would hold them for its lifetime.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


# The name of the metadata entry in which a carried graph records the model.keras it was converted from.
GRAPH_SOURCE_METADATA = "car_segmentation_source"


def graph_source(flatbuffer: bytes) -> dict | None:
    """What a LiteRT graph records of its origin (`GRAPH_SOURCE_METADATA`: JSON), or None if nothing.

    Read with the flatbuffer schema LiteRT ships, so no TensorFlow is needed; ValueError if the
    bytes are not a LiteRT graph.
    """
    import json

    from ai_edge_litert import schema_py_generated as schema

    if len(flatbuffer) < 8 or not schema.Model.ModelBufferHasIdentifier(flatbuffer, 0):
        raise ValueError("not a LiteRT (.tflite) graph")
    model = schema.Model.GetRootAs(flatbuffer, 0)
    for index in range(model.MetadataLength()):
        entry = model.Metadata(index)
        if entry.Name() == GRAPH_SOURCE_METADATA.encode():
            return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


def run_interpreter(interpreter, batch: np.ndarray) -> np.ndarray:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def keras_model_of(network):
    """The Keras model behind a bundle's network (`Bundle.model`): itself, or the one its graphs came from."""
    return network.keras_model() if isinstance(network, (CarriedGraphs, CarriedOnnxGraph)) else network


def chosen_runtime(runtime: str | None = None) -> str:
    """`runtime`, else MODEL_RUNTIME, else ONNX Runtime; ValueError naming the choices for anything else."""
    runtime = (runtime or os.environ.get("MODEL_RUNTIME") or DEFAULT_RUNTIME).strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}.")
    return runtime


def make_forward(network, runtime: str | None = None, canonical_shape: tuple | None = None,
                 any_shape: bool = True) -> tuple[Forward, str]:
    """The forward pass for `runtime` (default: MODEL_RUNTIME, else ONNX Runtime), and the runtime it really is.

    `network`: a Keras model, a bundle's `CarriedOnnxGraph` (served as it is by ONNX Runtime) or
    its `CarriedGraphs` (served as they are by LiteRT); the other runtimes load the bundle's Keras
    model. ONNX Runtime needs a carried ONNX graph: without one (`demo.loading.load_bundle` logged
    why), LiteRT serves. `canonical_shape`: the (1, H, W, 3) input
    most photos are fed at; `any_shape`: whether the model takes other shapes (fully convolutional)
    or only that one. Fully convolutional models run float graphs with dynamic height and width
    alone (as fast as a fixed one, measured); int8 keeps a fixed graph for `canonical_shape`,
    its dynamic one being much slower. LiteRT that cannot be imported or converted falls back to TensorFlow,
    logged, never silently.
    """
    runtime = chosen_runtime(runtime)
    if isinstance(network, CarriedOnnxGraph):
        if runtime == ONNX_RUNTIME:
            return OnnxRuntimeForward(network, canonical_shape if any_shape else None), runtime
        logger.info("MODEL_RUNTIME=%s runs the Keras model: loading model.keras.", runtime)
        network = network.keras_model()
    if runtime == ONNX_RUNTIME:
        runtime = LITERT
    if isinstance(network, CarriedGraphs):
        if runtime == LITERT:
            # A what-if feed size (evaluate --input-size) has no fixed graph: the any-shape one takes it.
            if network.ready_any_shape() is None and tuple(canonical_shape or ()) not in network.fixed_shapes:
                canonical_shape = None
            return LiteRTForward(network, canonical_shape, any_shape), runtime
        logger.info("MODEL_RUNTIME=%s runs the Keras model: loading model.keras.", runtime)
        network = keras_model_of(network)
    if runtime in GRAPH_WEIGHTS:
        try:
            graphs = ConvertedGraphs(network, weights=GRAPH_WEIGHTS[runtime])
            return LiteRTForward(graphs, canonical_shape, any_shape, single_graph=runtime != LITERT_INT8), runtime
        except Exception as error:  # a missing package, an op the converter lacks, ...
            logger.warning("LiteRT is not available (%s); serving with TensorFlow instead.", first_line(error))
    return TensorFlowForward(network), TENSORFLOW
