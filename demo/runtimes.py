"""The network's forward pass on the CPU: TensorFlow, or the same graph converted for LiteRT.

BENCHMARKS.md (section 4) measures every runtime on the default model through the engine:
LiteRT with int8 weights (dynamic-range quantisation: activations stay float32; XNNPACK
kernels, batch norm folded into the convolutions) keeps TensorFlow's validation IoU within
0.0001 and is the fastest that does, so the app serves it. The Keras model stays the source of
truth: the LiteRT graph is converted from it when the engine starts (a second or two), never
shipped separately, so it cannot drift from the verified model.keras.

MODEL_RUNTIME chooses ("litert", "litert-float32" or "tensorflow"); if LiteRT cannot be used,
the engine says why in the log and serves TensorFlow.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

TENSORFLOW = "tensorflow"
LITERT = "litert"  # int8 weights (dynamic-range quantisation), float32 activations
LITERT_FLOAT32 = "litert-float32"
RUNTIMES = (LITERT, LITERT_FLOAT32, TENSORFLOW)
DEFAULT_RUNTIME = LITERT
# Human names, for the page and the benchmark.
RUNTIME_NAMES = {TENSORFLOW: "TensorFlow", LITERT: "LiteRT (XNNPACK, int8 weights)",
                 LITERT_FLOAT32: "LiteRT (XNNPACK, float32)"}

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


def tflite_flatbuffer(model, input_shape=(1, None, None, 3), quantize: bool = False) -> bytes:
    """The model's inference graph as a LiteRT (.tflite) flatbuffer; None dims stay dynamic.

    The graph is frozen first: fed the live concrete function, the converter keeps
    READ_VARIABLE ops, which XNNPACK then runs to all-NaN output without a word.
    `quantize`: dynamic-range int8 weights (activations stay float).
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    graph = tf.function(lambda batch: model(batch, training=False)).get_concrete_function(
        tf.TensorSpec(input_shape, tf.float32))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(graph)], model)
    if quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()


class LiteRTForward:
    """The network in LiteRT, for photos of every shape.

    Most photos (4:3 street scenes) reach the network at one shape, the training frames': for it
    the graph is converted with that fixed shape, which XNNPACK runs fastest (BENCHMARKS.md,
    section 4: dynamic dims cost about 12%). The first photo of another shape converts a second
    graph with dynamic height and width (about a second, once), which re-plans its tensors when
    the shape changes. Not thread-safe inside: one pass at a time.
    """

    def __init__(self, model, canonical_shape: tuple | None, quantize: bool, any_shape: bool = True,
                 threads: int | None = None):
        self._model, self._quantize, self._any_shape = model, quantize, any_shape
        self._threads = threads or usable_cores()
        self._canonical_shape = tuple(canonical_shape) if canonical_shape else None
        self._canonical = self._interpreter(self._canonical_shape) if canonical_shape else None
        self._dynamic, self._dynamic_shape, self._fallback = None, None, None
        self._lock = threading.Lock()
        self.plans = 1 if canonical_shape else 0  # tensor plans made so far

    def _interpreter(self, shape: tuple | None):
        from ai_edge_litert.interpreter import Interpreter

        flatbuffer = tflite_flatbuffer(self._model, shape or (1, None, None, 3), quantize=self._quantize)
        interpreter = Interpreter(model_content=flatbuffer, num_threads=self._threads)
        if shape:
            interpreter.allocate_tensors()
        release_freed_memory()
        return interpreter

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            if batch.shape == self._canonical_shape:
                return run_interpreter(self._canonical, batch)
            if self._dynamic is None and self._fallback is None:
                self._prepare_any_shape(batch.shape)
            if self._fallback is not None:
                return self._fallback(batch)
            if batch.shape != self._dynamic_shape:
                input_index = self._dynamic.get_input_details()[0]["index"]
                self._dynamic.resize_tensor_input(input_index, batch.shape, strict=False)
                self._dynamic.allocate_tensors()
                self._dynamic_shape = batch.shape
                self.plans += 1
            return run_interpreter(self._dynamic, batch)

    def _prepare_any_shape(self, shape: tuple) -> None:
        """At the first photo not fed at the canonical shape: the any-shape graph, else TensorFlow."""
        if self._any_shape:
            try:
                logger.info("First photo fed at %s: converting the network for any shape.", shape[1:3])
                self._dynamic = self._interpreter(None)
                return
            except Exception as error:
                reason = first_line(error)
        else:
            reason = f"this model takes only {self._canonical_shape}"
        logger.warning("LiteRT cannot run shape %s (%s); TensorFlow runs photos of that shape.", shape, reason)
        self._fallback = TensorFlowForward(self._model)


def release_freed_memory() -> None:
    """Hand the converter's freed working memory back to the system (about 200 MB, measured).

    glibc keeps freed heap pages for reuse; a serving process would hold them for its lifetime.
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def run_interpreter(interpreter, batch: np.ndarray) -> np.ndarray:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).copy()


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def make_forward(model, runtime: str | None = None, canonical_shape: tuple | None = None,
                 any_shape: bool = True) -> tuple[Forward, str]:
    """The forward pass for `runtime` (default: MODEL_RUNTIME, else LiteRT int8), and the runtime it really is.

    `canonical_shape`: the (1, H, W, 3) input most photos are fed at (converted for it up front);
    `any_shape`: whether the model takes other shapes (fully convolutional) or only that one.
    LiteRT that cannot be imported or converted falls back to TensorFlow, logged, never silently.
    """
    runtime = (runtime or os.environ.get("MODEL_RUNTIME") or DEFAULT_RUNTIME).strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}.")
    if runtime in (LITERT, LITERT_FLOAT32):
        try:
            return LiteRTForward(model, canonical_shape, quantize=runtime == LITERT, any_shape=any_shape), runtime
        except Exception as error:  # a missing package, an op the converter lacks, ...
            logger.warning("LiteRT is not available (%s); serving with TensorFlow instead.", first_line(error))
    return TensorFlowForward(model), TENSORFLOW
