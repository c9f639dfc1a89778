"""How close a model's forward pass comes to the machine's own float32 matrix-multiply rate,
and, from TensorFlow's profiler, where its time goes: by op type and by convolution width."""
from __future__ import annotations

import collections
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from demo.bundle import BundleConfig
from demo.engine import canonical_input_shape, median_ms
from demo.runtimes import TENSORFLOW, describe_runtime, keras_model_of, make_forward

TARGET_FRACTION_OF_MATMUL = 0.9
CONVOLUTION_TYPES = {"Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative"}


@dataclass(frozen=True)
class OpTypeTime:
    op_type: str
    ms_per_pass: float
    share: float  # of all op self-time
    gflops_per_pass: float  # 0 for op types that do no counted multiply-adds

    @property
    def gflop_per_s(self) -> float | None:
        return self.gflops_per_pass / (self.ms_per_pass / 1000) if self.gflops_per_pass else None


@dataclass(frozen=True)
class ConvolutionWidth:
    """All the convolutions of one model that output `channels` channels."""

    channels: int
    layers: int
    ms_per_pass: float
    gflops_per_pass: float
    weight_mib: float  # read every pass
    output_pixels: tuple[int, int]  # the fewest and the most, over the group's layers

    @property
    def gflop_per_s(self) -> float:
        return self.gflops_per_pass / (self.ms_per_pass / 1000)


@dataclass
class ForwardEfficiency:
    model: str
    network_input: tuple[int, int]
    gflops_per_image: float
    forward_ms: float  # TensorFlow
    served_forward_ms: float | None = None  # the same pass in the app's runtime
    served_runtime: str = ""  # which (demo.runtimes.describe_runtime)
    served_error: str = ""
    op_types: list[OpTypeTime] = field(default_factory=list)
    convolution_widths: list[ConvolutionWidth] = field(default_factory=list)
    profile_error: str = ""

    @property
    def gflop_per_s(self) -> float:
        return self.gflops_per_image / (self.forward_ms / 1000)

    @property
    def served_gflop_per_s(self) -> float | None:
        return self.gflops_per_image / (self.served_forward_ms / 1000) if self.served_forward_ms else None

    def convolution_share(self) -> float:
        return sum(entry.share for entry in self.op_types if is_convolution(entry.op_type))

    def convolution_gflop_per_s(self) -> float | None:
        milliseconds = sum(width.ms_per_pass for width in self.convolution_widths)
        gflops = sum(width.gflops_per_pass for width in self.convolution_widths)
        return gflops / (milliseconds / 1000) if milliseconds else None


def is_convolution(op_type: str) -> bool:
    # Conv2D, Grappler's _FusedConv2D (convolution + bias + activation), Conv2DBackpropInput (transposed)...
    return "Conv" in op_type


def matmul_rates(size: int, repeats: int, warmup: int) -> dict[str, float]:
    """GFLOP/s of a size x size float32 matrix product, in TensorFlow (a tf.function) and in NumPy."""
    import tensorflow as tf

    flops = 2 * size**3
    a = tf.random.normal((size, size), dtype=tf.float32)
    b = tf.random.normal((size, size), dtype=tf.float32)
    # One element is read back so the product is really computed, without timing a 16 MB copy.
    product = tf.function(lambda a, b: tf.linalg.matmul(a, b)[0, 0])
    tensorflow_ms = median_ms(lambda: product(a, b).numpy(), repeats, warmup)
    a_numpy, b_numpy = a.numpy(), b.numpy()
    numpy_ms = median_ms(lambda: np.matmul(a_numpy, b_numpy), repeats, warmup)
    return {"tensorflow": flops / tensorflow_ms / 1e6, "numpy": flops / numpy_ms / 1e6}


def measure_forward(name: str, network, config: BundleConfig, network_input: tuple[int, int], repeats: int,
                    warmup: int, profiled_passes: int) -> ForwardEfficiency:
    """Time the bare forward pass (batch 1) in TensorFlow (a tf.function) and in the app's runtime
    (the bundle's carried graph, if `network` is one), then profile TensorFlow's."""
    import tensorflow as tf

    from training.models import count_flops

    model = keras_model_of(network)
    forward = tf.function(lambda batch: model(batch, training=False))
    pixels = np.random.default_rng(0).uniform(0, 255, (1, *network_input, 3)).astype(np.float32)
    batch = tf.constant(pixels)
    forward_ms = median_ms(lambda: forward(batch).numpy(), repeats, warmup)
    result = ForwardEfficiency(name, network_input, count_flops(model, network_input) / 1e9, forward_ms)
    served_forward, runtime = make_forward(network, None, canonical_input_shape(config),
                                           any_shape=not config.fixed_input)
    if runtime != TENSORFLOW:
        result.served_runtime = describe_runtime(runtime, getattr(network, "weights", None))
        result.served_forward_ms = median_ms(lambda: served_forward(pixels), repeats, warmup)
    else:
        result.served_error = "no graph runtime could load the model (the app would fall back to TensorFlow)"
    # The profiled ops carry the node names of this very trace, so FLOPs can be matched to them.
    graph = forward.get_concrete_function(batch).graph
    try:
        executed = profile_ops(lambda: forward(batch).numpy(), profiled_passes)
    except Exception as error:  # the profiler's reader is a private TensorFlow module: say so if it moved
        result.profile_error = f"{type(error).__name__}: {error}"
        return result
    result.op_types, result.convolution_widths = attribute(executed, graph, node_flops(graph), profiled_passes)
    return result


def node_flops(graph) -> dict[str, float]:
    """FLOPs of every node of a traced forward pass, as training.models.count_flops counts them."""
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    flops, pending = {}, [profile(graph, cmd="graph", options=options)]
    while pending:
        node = pending.pop()
        pending.extend(node.children)
        if node.float_ops:
            flops[node.name] = float(node.float_ops)
    return flops


def profile_ops(run_pass, passes: int) -> list[tuple[str, str, float]]:
    """(op type, node name, self-time in µs) of every op that ran in `passes` passes, from TensorFlow's
    profiler (its framework_op_stats view of the trace, as TensorBoard shows it)."""
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
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    type_column, name_column = columns.index("type"), columns.index("operation")
    time_column = columns.index("total_self_time")
    rows = [[cell.get("v") for cell in row["c"]] for row in table["rows"]]
    # IDLE is time the host spent waiting, not running an op.
    return [(row[type_column], row[name_column], row[time_column]) for row in rows if row[type_column] != "IDLE"]


def attribute(executed, graph, flops: dict[str, float], passes: int):
    """Per op type and per convolution width: time per pass and the FLOPs done in it.

    Grappler fuses a convolution with its bias and activation and names the fused op after the
    last of them, so a convolution's FLOPs are found through its layer scope (the name's folder).
    """
    convolutions = {}  # layer scope -> (output channels, FLOPs, weight bytes, output pixels)
    for operation in graph.get_operations():
        if operation.type in CONVOLUTION_TYPES and operation.name in flops:
            _, height, width, channels = operation.outputs[0].shape
            weight_bytes = 4 * int(np.prod(operation.inputs[1].shape))
            convolutions[operation.name.rsplit("/", 1)[0]] = (int(channels), flops[operation.name], weight_bytes,
                                                              int(height) * int(width))
    node_types = {operation.name: operation.type for operation in graph.get_operations()}
    type_us, type_flops = collections.Counter(), collections.Counter()
    width_us, width_flops, width_layers = collections.Counter(), collections.Counter(), collections.Counter()
    width_bytes, width_pixels = collections.Counter(), collections.defaultdict(list)
    for op_type, name, microseconds in executed:
        type_us[op_type] += microseconds
        scope = name.rsplit("/", 1)[0]
        if is_convolution(op_type) and scope in convolutions:
            channels, layer_flops, weight_bytes, pixels = convolutions[scope]
            type_flops[op_type] += layer_flops
            width_us[channels] += microseconds
            width_flops[channels] += layer_flops
            width_layers[channels] += 1
            width_bytes[channels] += weight_bytes
            width_pixels[channels].append(pixels)
        elif not is_convolution(op_type) and name in flops and node_types.get(name) == op_type:
            type_flops[op_type] += flops[name]
    total_us = sum(type_us.values())
    op_types = [OpTypeTime(op_type, microseconds / 1000 / passes, microseconds / total_us,
                           type_flops[op_type] / 1e9) for op_type, microseconds in type_us.most_common()]
    widths = [ConvolutionWidth(channels, width_layers[channels], width_us[channels] / 1000 / passes,
                               width_flops[channels] / 1e9, width_bytes[channels] / 2**20,
                               (min(width_pixels[channels]), max(width_pixels[channels])))
              for channels in sorted(width_us)]
    return op_types, widths
