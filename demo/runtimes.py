"""The network's forward pass on the CPU: TensorFlow, or the same graph converted for LiteRT.

BENCHMARKS.md (section 4) measures every runtime on the default model through the engine:
LiteRT float32 (XNNPACK kernels, batch norm folded into the convolutions) gives TensorFlow's
validation IoU to the fourth decimal and answers a photo in about 0.7 of TensorFlow's time,
so the app serves it. The Keras model stays the source of truth: the LiteRT graph is converted
from it when the engine starts (about a second), never shipped separately, so it cannot drift
from the verified model.keras.

MODEL_RUNTIME chooses ("litert" or "tensorflow"); if LiteRT cannot be used, the engine says why
in the log and serves TensorFlow.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

TENSORFLOW = "tensorflow"
LITERT = "litert"
RUNTIMES = (LITERT, TENSORFLOW)
DEFAULT_RUNTIME = LITERT
# Human names, for the page and the benchmark.
RUNTIME_NAMES = {TENSORFLOW: "TensorFlow", LITERT: "LiteRT (XNNPACK, float32)"}

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
    """A LiteRT interpreter that takes inputs of any size.

    The interpreter re-plans its tensors when the input shape changes (milliseconds) and
    keeps the plan while photos keep their shape. It is not thread-safe: one pass at a time.
    """

    def __init__(self, flatbuffer: bytes, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_content=flatbuffer, num_threads=threads or usable_cores())
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._shape = None
        self._lock = threading.Lock()
        self.plans = 0  # tensor plans made so far (one per change of input shape)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            if batch.shape != self._shape:
                self._interpreter.resize_tensor_input(self._input, batch.shape, strict=False)
                self._interpreter.allocate_tensors()
                self._shape = batch.shape
                self.plans += 1
            self._interpreter.set_tensor(self._input, batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output).copy()


def make_forward(model, runtime: str | None = None, input_shape: tuple | None = None) -> tuple[Forward, str]:
    """The forward pass for `runtime` (default: MODEL_RUNTIME, else LiteRT), and the runtime it really is.

    `input_shape`: the one (1, H, W, 3) shape a fixed-size model is fed; None converts with dynamic
    height and width (fully convolutional models). LiteRT that cannot be imported or converted
    falls back to TensorFlow, logged, never silently.
    """
    runtime = (runtime or os.environ.get("MODEL_RUNTIME") or DEFAULT_RUNTIME).strip().lower()
    if runtime not in RUNTIMES:
        raise ValueError(f"Unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}.")
    if runtime == LITERT:
        try:
            return LiteRTForward(tflite_flatbuffer(model, input_shape or (1, None, None, 3))), LITERT
        except Exception as error:  # a missing package, an op the converter lacks, ...
            logger.warning("LiteRT is not available (%s: %s); serving with TensorFlow instead.",
                           type(error).__name__, str(error).strip().splitlines()[0] if str(error).strip() else "")
    return TensorFlowForward(model), TENSORFLOW
