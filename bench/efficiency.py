"""How close a model's forward pass comes to the machine's own float32 matrix-multiply rate,
and, from TensorFlow's profiler, where its time goes by op type."""
from __future__ import annotations

import collections
import json
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.timing import durations_ms

TARGET_FRACTION_OF_MATMUL = 0.9


@dataclass(frozen=True)
class OpTypeTime:
    op_type: str
    ms_per_pass: float
    share: float  # of all op self-time
    gflops_per_pass: float  # 0 for op types that do no counted multiply-adds

    @property
    def gflop_per_s(self) -> float | None:
        return self.gflops_per_pass / (self.ms_per_pass / 1000) if self.gflops_per_pass else None


@dataclass
class ForwardEfficiency:
    model: str
    network_input: tuple[int, int]
    gflops_per_image: float
    forward_ms: float
    op_types: list[OpTypeTime] = field(default_factory=list)
    profile_error: str = ""

    @property
    def gflop_per_s(self) -> float:
        return self.gflops_per_image / (self.forward_ms / 1000)

    def convolution_share(self) -> float:
        return sum(entry.share for entry in self.op_types if is_convolution(entry.op_type))

    def convolution_gflop_per_s(self) -> float | None:
        convolutions = [entry for entry in self.op_types if is_convolution(entry.op_type)]
        milliseconds = sum(entry.ms_per_pass for entry in convolutions)
        gflops = sum(entry.gflops_per_pass for entry in convolutions)
        return gflops / (milliseconds / 1000) if milliseconds else None


def is_convolution(op_type: str) -> bool:
    # Conv2D, Grappler's _FusedConv2D, Conv2DBackpropInput (transposed convolution), ...
    return "Conv" in op_type


def matmul_rates(size: int, repeats: int, warmup: int) -> dict[str, float]:
    """GFLOP/s of a size x size float32 matrix product, in TensorFlow (a tf.function) and in NumPy."""
    import tensorflow as tf

    flops = 2 * size**3
    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)
    # One element is read back so the product is really computed, without timing a 16 MB copy.
    product = tf.function(lambda a, b: tf.linalg.matmul(a, b)[0, 0])
    tensorflow_ms = statistics.median(durations_ms(lambda: product(a, b).numpy(), repeats, warmup))
    a_numpy, b_numpy = a.numpy(), b.numpy()
    numpy_ms = statistics.median(durations_ms(lambda: np.matmul(a_numpy, b_numpy), repeats, warmup))
    return {"tensorflow": flops / tensorflow_ms / 1e6, "numpy": flops / numpy_ms / 1e6}


def measure_forward(name: str, model, network_input: tuple[int, int], repeats: int, warmup: int,
                    profiled_passes: int) -> ForwardEfficiency:
    """Time the bare forward pass as the engine runs it (a tf.function, batch 1), then profile it."""
    import tensorflow as tf

    from training.models import count_flops

    forward = tf.function(lambda batch: model(batch, training=False))
    batch = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, *network_input, 3)).astype(np.float32))
    forward_ms = statistics.median(durations_ms(lambda: forward(batch).numpy(), repeats, warmup))
    result = ForwardEfficiency(name, network_input, count_flops(model, network_input) / 1e9, forward_ms)
    try:
        result.op_types = profile_op_types(lambda: forward(batch).numpy(), profiled_passes,
                                           flops_by_op_type(model, network_input))
    except Exception as error:  # the profiler's reader is a private TensorFlow module: say so if it moved
        result.profile_error = f"{type(error).__name__}: {error}"
    return result


def flops_by_op_type(model, network_input: tuple[int, int]) -> dict[str, float]:
    """Forward FLOPs per op type, as training.models.count_flops counts them."""
    import tensorflow as tf
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    spec = tf.TensorSpec((1, *network_input, 3), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    by_type = profile(graph, cmd="op", options=options)
    return {child.name: float(child.total_float_ops) for child in by_type.children}


def profile_op_types(run_pass, passes: int, flops_by_type: dict[str, float]) -> list[OpTypeTime]:
    """Self-time per op type over `passes` forward passes, from TensorFlow's profiler
    (its framework_op_stats view of the trace, as TensorBoard shows it)."""
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as profiler_plugin

    with tempfile.TemporaryDirectory() as log_dir:
        tf.profiler.experimental.start(log_dir)
        try:
            for _ in range(passes):
                run_pass()
        finally:
            tf.profiler.experimental.stop()
        traces = [str(path) for path in Path(log_dir).rglob("*.xplane.pb")]
        data, ok = profiler_plugin.xspace_to_tools_data(traces, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(data.decode(errors="replace") if isinstance(data, bytes) else str(data))
    self_time_us = collections.Counter()
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    type_column, time_column = columns.index("type"), columns.index("total_self_time")
    for row in table["rows"]:
        values = [cell.get("v") for cell in row["c"]]
        if values[type_column] != "IDLE":  # time the host spent waiting, not running an op
            self_time_us[values[type_column]] += values[time_column]
    total_us = sum(self_time_us.values())
    convolution_flops = sum(flops for op_type, flops in flops_by_type.items() if is_convolution(op_type))
    convolution_us = sum(us for op_type, us in self_time_us.items() if is_convolution(op_type))
    rows = []
    for op_type, microseconds in self_time_us.most_common():
        ms_per_pass = microseconds / 1000 / passes
        if is_convolution(op_type):
            # Grappler renames fused convolutions, so convolution FLOPs are shared out by time.
            flops = convolution_flops * microseconds / convolution_us
        else:
            flops = flops_by_type.get(op_type, 0.0)
        rows.append(OpTypeTime(op_type, ms_per_pass, microseconds / total_us, flops / 1e9))
    return rows
