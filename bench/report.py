"""BENCHMARKS.md from one run's results: every figure, how it was measured, targets and misses."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.bundles import repo_path, size_text
from bench.clips import ClipTiming
from bench.efficiency import TARGET_FRACTION_OF_MATMUL, ForwardEfficiency, is_convolution
from bench.latency import EndToEnd
from bench.runtimes import CONVERTED_AT_START, IOU_TOLERANCE, REFERENCE, SERVED, SERVED_LITERT, RuntimeResult, recommend
from bench.serving import CARRIED, SETTLE_S, SHAPE_CLASSES, LoadLevel, StartUp
from bench.slider import SliderTiming
from bench.training_speed import Throughput

# The targets of issue #5.
SLIDER_TARGET_MS = 20.0
SLIDER_TARGET_SHARE = 0.05  # of a full inference
# The targets of issue #15, for the app serving the graphs its bundle carries.
COLD_START_TARGET_S = 5.0
STEADY_RSS_TARGET_MIB = 400
PEAK_RSS_TARGET_MIB = 500
FIRST_PHOTO_TARGET_RATIO = 2.0  # the first photo of a shape class after start, against a warm one
TOP_OP_TYPES = 8
DISTURBED_SHARE = 0.05  # other processes using more of the machine's CPU than this during a step


@dataclass
class Results:
    settings: object
    command: str
    started_utc: str
    machine: dict = field(default_factory=dict)
    load_before: dict = field(default_factory=dict)
    load_after: dict = field(default_factory=dict)
    models: list[tuple[str, str, bool]] = field(default_factory=list)  # name, description, trained
    end_to_end: list[EndToEnd] = field(default_factory=list)
    slider: SliderTiming | None = None
    matmul: dict[str, float] = field(default_factory=dict)
    efficiency: list[ForwardEfficiency] = field(default_factory=list)
    runtimes: list[RuntimeResult] = field(default_factory=list)
    training: list[Throughput] = field(default_factory=list)
    start_ups: list[StartUp] = field(default_factory=list)
    app_python: str = "this .venv"  # which packages the app ran with in sections 6-7
    load: list[LoadLevel] = field(default_factory=list)
    clips: list[ClipTiming] = field(default_factory=list)  # section 8
    elapsed_s: float = 0.0
    steps: list[tuple[str, float, float]] = field(default_factory=list)  # name, wall s, others' CPU share
    targets: list[tuple[int, str, str, bool]] = field(default_factory=list)  # section, target, measured, met
    flicker: list = field(default_factory=list)  # bench.flicker.FlickerResults, one per pan speed


def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def number(value, digits: int = 1, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def header(results: Results) -> str:
    settings = results.settings
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `{results.command}` on {results.started_utc} (the run took "
        f"{results.elapsed_s / 60:.1f} min), every figure in this one run on the machine below. "
        f"Latencies are medians of {settings.repeats} timed runs after {settings.warmup} warm-up "
        "run(s), quartiles in brackets; ways of doing the same thing (engine and seed's way, the runtimes) "
        "are timed in interleaved rounds, so a slow spell of the machine falls on all of them alike. "
        "The photo is `demo/examples/0016E5_08017.png` (480x360 CamVid frame).",
    ]
    if settings.quick:
        lines += ["", "> **Quick mode**: tiny models, few repeats, `tests/fixtures/camvid`. These numbers show "
                      "that the benchmarks run; they describe neither the models nor the machine."]
    for name, description, trained in results.models:
        lines += ["", f"- **{name}**: {description}" + ("" if trained else " — untrained: its latencies hold, "
                                                         "its IoU figures mean nothing")]
    disturbed = [(name, share) for name, _, share in results.steps if share > DISTURBED_SHARE]
    if disturbed:
        busy = results.load_before["busy_processes"] + results.load_after["busy_processes"]
        commands = sorted({entry["command"] for entry in busy})
        lines += ["", f"> **The machine was not idle**: other processes used more than {DISTURBED_SHARE:.0%} of its "
                      f"CPU during {len(disturbed)} of the {len(results.steps)} steps (up to "
                      f"{max(share for _, share in disturbed):.0%}; the step table under *Machine* says which)"
                      + (": " + "; ".join(f"`{command}`" for command in commands[:5]) if commands else "")
                      + ". Figures from those steps are slower than this machine's own; rerun when it is idle."]
    return "\n".join(lines)


def load_average(snapshot: dict) -> str:
    return ", ".join(f"{value:.2f}" for value in snapshot["load_average"])


def machine_section(results: Results) -> str:
    machine = results.machine
    rows = [
        ["CPU", f"{machine['cpu_model']} (from /proc/cpuinfo); SIMD: "
                f"{', '.join(machine['cpu_flags']) or 'none listed'}"],
        ["cores", f"{machine['logical_cores']} logical, {machine['physical_cores']} physical, "
                  f"{machine['usable_cores']} usable by this process"],
        ["memory", f"{machine['memory_gib']:.1f} GiB"],
        ["system", machine["system"]],
        ["Python", machine["python"]],
        ["libraries", ", ".join(f"{name} {version}" for name, version in machine["libraries"].items())],
        ["load average (1, 5, 15 min) at start", load_average(results.load_before)],
        ["load average at end", load_average(results.load_after)],
    ]
    steps = [[name, number(wall), f"{share:.0%}"] for name, wall, share in results.steps]
    return "\n\n".join(["## Machine", table(["", ""], rows),
                        "Each step of the run, and the share of the machine's CPU that other processes used "
                        "meanwhile (whole-machine busy time from /proc/stat minus this run's processes):",
                        table(["step", "wall (s)", "other processes"], steps)])


def end_to_end_section(results: Results) -> str:
    rows = [[entry.model, size_text(entry.network_input), str(entry.engine), str(entry.seed), f"{entry.speed_up:.2f}x"]
            for entry in results.end_to_end]
    return "\n\n".join([
        "## 1. End-to-end latency of one 480x360 photo",
        "Decode the PNG, preprocess, run the network, resize back to 480x360, threshold, overlay. "
        "**Engine**: `demo.engine.SegmentationEngine` as the app runs it (area resize to the bundle's feed "
        "size, stride padding, the network in the app's runtime (twice, on the photo and its mirror image, where "
        "the bundle says `test_time_flip`), bilinear resize of the probabilities back). "
        "**Seed's way**, same weights: `cv2.imread`, `cv2.resize` to the network input, `/ 255`, "
        "`model.predict`, `np.where(p > threshold, 1, 0)`, nearest resize of the mask back, the same overlay "
        "(our models normalise inside the graph, so the scaled pixels are multiplied back by 255 before "
        "`predict`: microseconds).",
        table(["model", "network input", "engine, ms: median (quartiles)", "seed's way, ms: median (quartiles)",
               "engine speed-up (medians)"], rows),
    ])


def slider_section(results: Results) -> str:
    timing = results.slider
    share = timing.slider_with_stats_ms / timing.full_inference_ms
    met = timing.slider_with_stats_ms <= SLIDER_TARGET_MS and share <= SLIDER_TARGET_SHARE
    results.targets.append((2, f"slider move <= {SLIDER_TARGET_MS:g} ms and <= {SLIDER_TARGET_SHARE:.0%} of a "
                               "full inference (default model)",
                            f"{timing.slider_with_stats_ms:.2f} ms, {share:.1%}", met))
    rows = [
        ["full inference (network + threshold + overlay)", number(timing.full_inference_ms, 2), "100%"],
        ["slider move (threshold + overlay of kept probabilities)", number(timing.slider_ms, 2),
         f"{timing.slider_ms / timing.full_inference_ms:.1%}"],
        ["slider move + coverage stats (what the app redraws)", number(timing.slider_with_stats_ms, 2),
         f"{share:.1%}"],
    ]
    parts = [
        "## 2. A slider move against a full inference",
        "`bench/slider.py` (`python -m bench.slider`) on the default model: the app keeps each photo's "
        "probabilities, so a threshold move only re-thresholds and redraws. Gradio's JPEG/PNG encoding and "
        "the HTTP round trip come on top of both rows alike (sections 6-7 measure the whole request).",
        table(["", "ms", "share of a full inference"], rows),
        f"Target: <= {SLIDER_TARGET_MS:g} ms and <= {SLIDER_TARGET_SHARE:.0%} of a full inference: "
        f"{verdict(met)} ({timing.slider_with_stats_ms:.2f} ms, {share:.1%}).",
    ]
    if not met:
        parts.append(
            f"Why: the redraw costs {timing.slider_ms:.2f} ms for threshold + overlay and {timing.stats_ms:.2f} ms "
            f"for the coverage statistics (connected components), fixed costs of a 480x360 photo; the full "
            f"inference it is compared with takes {timing.full_inference_ms:.1f} ms. "
            + ("The network is so small here that 5% of it is under a millisecond: a larger (real) model "
               "meets the share by itself. " if timing.full_inference_ms < 40 else "")
            + "The overlay is already a lookup table put in place by OpenCV's masked copy; what is left is "
              "the redraw's fixed per-pixel work against a network that keeps getting faster.")
    return "\n\n".join(parts)


def efficiency_section(results: Results) -> str:
    best_name, best_rate = max(results.matmul.items(), key=lambda item: item[1])
    matmul_size = results.settings.matmul_size
    rows = []
    for entry in results.efficiency:
        # The target is judged on the pass the app runs, or TensorFlow's if the app's runtime failed.
        served_rate = entry.served_gflop_per_s
        for runtime, forward_ms, rate in (("TensorFlow", entry.forward_ms, entry.gflop_per_s),
                                          (f"{entry.served_runtime or 'its runtime'} (the app's)",
                                           entry.served_forward_ms, served_rate)):
            if rate is None:
                rows.append([entry.model, runtime, size_text(entry.network_input), number(entry.gflops_per_image, 2),
                             "failed", "", "", "", entry.served_error])
                continue
            fraction = rate / best_rate
            judged = (runtime != "TensorFlow") == (served_rate is not None)
            met = fraction >= TARGET_FRACTION_OF_MATMUL
            if judged:
                results.targets.append((3, f"{entry.model} forward as served >= {TARGET_FRACTION_OF_MATMUL:g} "
                                           "of the matmul rate", f"{fraction:.2f} ({runtime.split(' ')[0]})", met))
            rows.append([entry.model, runtime, size_text(entry.network_input), number(entry.gflops_per_image, 2),
                         number(forward_ms), number(rate), f"{rate / results.matmul['tensorflow']:.2f}",
                         f"{rate / results.matmul['numpy']:.2f}", verdict(met) if judged else f"({verdict(met)})"])
    parts = [
        "## 3. Efficiency: forward FLOP/s against the machine's matrix-multiply rate",
        f"The machine's own float32 rate, measured in this run ({matmul_size}x{matmul_size} times "
        f"{matmul_size}x{matmul_size}, 2n³ FLOPs): TensorFlow `tf.linalg.matmul` in a `tf.function` "
        f"**{results.matmul['tensorflow']:.1f} GFLOP/s**, NumPy `np.matmul` **{results.matmul['numpy']:.1f} "
        f"GFLOP/s**. The target is judged against the faster ({best_name}), the machine's best measured rate.",
        "A model's forward FLOPs per image come from `training.models.count_flops` at the network input the "
        "engine feeds a 480x360 photo; the time is the bare forward pass (batch 1), in TensorFlow (a "
        "`tf.function`) and in the app's runtime as the app runs it (`demo/runtimes.py`). The target is judged "
        "on the app's runtime; the TensorFlow row's verdict is in brackets (every runtime's end-to-end latency "
        "is in section 4).",
        table(["model", "runtime", "network input", "GFLOPs / image", "forward (ms)", "GFLOP/s",
               "fraction of TF matmul", "fraction of numpy matmul",
               f"target >= {TARGET_FRACTION_OF_MATMUL:g}"], rows),
    ]
    for entry in results.efficiency:
        parts.append(op_profile(entry, results.matmul, results.settings.profiled_passes))
    return "\n\n".join(parts)


def op_profile(entry: ForwardEfficiency, matmul: dict[str, float], passes: int) -> str:
    """Where the forward pass of one model spends its time, and what that says about the target."""
    matmul_rate = max(matmul.values())
    title = f"### Where the {entry.model} forward pass spends its time"
    if entry.profile_error:
        return f"{title}\n\nThe TensorFlow profiler could not be read: {entry.profile_error}"
    op_rows = [[op.op_type, number(op.ms_per_pass, 2), f"{op.share:.1%}",
                number(op.gflop_per_s) if op.gflop_per_s else "-"] for op in entry.op_types[:TOP_OP_TYPES]]
    convolution_ms = sum(width.ms_per_pass for width in entry.convolution_widths)
    width_rows = [[width.channels, width.layers, pixel_range(width.output_pixels), number(width.weight_mib, 2),
                   number(width.ms_per_pass, 2), f"{width.ms_per_pass / convolution_ms:.0%}",
                   number(width.gflop_per_s), f"{width.gflop_per_s / matmul_rate:.2f}"]
                  for width in entry.convolution_widths]
    return "\n\n".join([
        title,
        f"TensorFlow's profiler (`tf.profiler.experimental`, its framework op stats) over {passes} forward "
        "passes: self-time per op type (with the rate of those that do multiply-adds), then the convolutions "
        "grouped by how many channels they output.",
        table(["op type", "ms per pass", "share", "GFLOP/s"], op_rows),
        table(["output channels", "convolutions", "output pixels", "weights (MiB)", "ms per pass",
               "share of convolution time", "GFLOP/s", "fraction of matmul"], width_rows),
        efficiency_reason(entry, matmul) + served_rate_sentence(entry, matmul),
    ])


def served_rate_sentence(entry: ForwardEfficiency, matmul: dict[str, float]) -> str:
    """How the app's runtime fares on the same pass, against the profile of TensorFlow's above."""
    matmul_rate = max(matmul.values())
    if entry.served_gflop_per_s is None:
        return f" The app's runtime was not measured: {entry.served_error}."
    fraction = entry.served_gflop_per_s / matmul_rate
    return (f" {entry.served_runtime}, as the app runs this model, does the same pass in {entry.served_forward_ms:.1f} ms "
            f"against TensorFlow's {entry.forward_ms:.1f} ms: {entry.served_gflop_per_s:.1f} GFLOP/s, "
            f"{fraction:.2f} of the matmul rate"
            + (" (its multiply-adds are in int8, counted as the float model's)"
               if "int8" in entry.served_runtime else "")
            + ", "
            + ("which meets the target." if fraction >= TARGET_FRACTION_OF_MATMUL else
               f"short of the target by {TARGET_FRACTION_OF_MATMUL - fraction:.2f}."))


def efficiency_reason(entry: ForwardEfficiency, matmul: dict[str, float]) -> str:
    """The profile in words; where the target is missed, what the gap is made of and what would close it."""
    best_name, matmul_rate = max(matmul.items(), key=lambda item: item[1])
    convolution_rate = entry.convolution_gflop_per_s() or 0.0
    convolution_share = entry.convolution_share()
    others = [op for op in entry.op_types if not is_convolution(op.op_type)]
    text = (f"Convolutions take {convolution_share:.0%} of the op time and run at {convolution_rate:.1f} GFLOP/s "
            f"({convolution_rate / matmul_rate:.2f} of the matmul rate); the other {1 - convolution_share:.0%} "
            "goes to ops with few or no multiply-adds: "
            + ", ".join(f"{op.op_type} {op.share:.0%}" for op in others[:5]) + ".")
    if entry.gflop_per_s / matmul_rate >= TARGET_FRACTION_OF_MATMUL or not entry.convolution_widths:
        return text
    convolution_ms = sum(width.ms_per_pass for width in entry.convolution_widths)
    # Groups under 5% of the convolution time (a final 1x1 layer, say) explain nothing.
    significant = [width for width in entry.convolution_widths if width.ms_per_pass >= 0.05 * convolution_ms]
    slowest = min(significant, key=lambda width: width.gflop_per_s)
    fastest = max(significant, key=lambda width: width.gflop_per_s)
    text += (f" By width, the slowest convolutions ({slowest.channels} output channels, "
             f"{slowest.ms_per_pass / convolution_ms:.0%} of the convolution time) run at "
             f"{slowest.gflop_per_s:.1f} GFLOP/s and the fastest ({fastest.channels} channels) at "
             f"{fastest.gflop_per_s:.1f} GFLOP/s ({fastest.gflop_per_s / matmul_rate:.2f} of the matmul rate).")
    closers = []
    if 1 - convolution_share >= 0.05:
        closers.append(f"the {1 - convolution_share:.0%} outside convolutions can be fused away (batch "
                       "normalisation folded into the convolution weights, element-wise ops fused into them: what "
                       "XLA, TFLite and ONNX Runtime do to a graph; section 4 measures those)")
    slow = [width for width in significant if width.gflop_per_s < TARGET_FRACTION_OF_MATMUL * fastest.gflop_per_s]
    full_resolution = max(width.output_pixels[1] for width in entry.convolution_widths)
    narrow = [width for width in slow
              if width.output_pixels[1] == full_resolution and width.channels < fastest.channels]
    wide = [width for width in slow if width.channels > fastest.channels]
    if narrow:
        closers.append(f"the full-resolution {channel_list(narrow)}-channel convolutions "
                       f"({time_share(narrow, convolution_ms)} of the convolution time) run on many pixels with few "
                       "channels, so they do few multiply-adds per byte of activations they move (likely "
                       "memory-bound at batch 1): doing less at full resolution closes this part (fewer or "
                       "narrower full-size layers, a strided first layer), not a faster kernel")
    if wide:
        pixels = pixel_range((min(width.output_pixels[0] for width in wide),
                              max(width.output_pixels[1] for width in wide)))
        closers.append(f"the {channel_list(wide)}-channel convolutions ({time_share(wide, convolution_ms)} of the "
                       f"convolution time) run deep in the network on only {pixels} output pixels per layer and read "
                       f"{sum(width.weight_mib for width in wide):.1f} MiB of weights per pass: little work per weight "
                       "byte and per op call at batch 1; batching photos would amortise both (throughput, not one "
                       "photo's latency)")
    if fastest.gflop_per_s < TARGET_FRACTION_OF_MATMUL * matmul_rate:
        against_tensorflow = fastest.gflop_per_s / matmul["tensorflow"]
        closers.append(f"even the fastest convolutions stay at {fastest.gflop_per_s / matmul_rate:.2f} of the "
                       f"{best_name} matmul rate ({against_tensorflow:.2f} of TensorFlow's own matmul): that last "
                       "part is TensorFlow's CPU convolution kernels at batch 1; another runtime's kernels "
                       "(section 4) or int8 arithmetic are the way past it")
    return text + (" What would close the gap: " + "; ".join(closers) + "." if closers else "")


def pixel_range(pixels: tuple[int, int]) -> str:
    return f"{pixels[0]:,}" if pixels[0] == pixels[1] else f"{pixels[0]:,}-{pixels[1]:,}"


def channel_list(widths) -> str:
    return ", ".join(str(width.channels) for width in widths)


def time_share(widths, total_ms: float) -> str:
    return f"{sum(width.ms_per_pass for width in widths) / total_ms:.0%}"


def served_runtime_verdict(runtimes: list[RuntimeResult], reference: RuntimeResult) -> str:
    """What the app serves, and whether this run confirms it: within IOU_TOLERANCE of TensorFlow's
    val IoU and as fast as the fastest runtime that is (or not told apart from it). An int8 graph,
    chosen on held-out drives, has its val IoU reported rather than held to that tolerance."""
    served = next(result for result in runtimes if result.name == SERVED)
    if served.error or served.val_iou is None or reference.val_iou is None:
        return f"**The app serves {SERVED}**, which this run could not measure: {served.error or 'no val IoU'}."
    change = served.val_iou - reference.val_iou
    verdict = (f"**The app serves {SERVED}** (`demo/runtimes.py`): val IoU {served.val_iou:.4f} "
               f"(Δ {change:+.4f} against TensorFlow), {served.latency.median:.1f} ms per photo against "
               f"TensorFlow's {reference.latency.median:.1f} ms ({reference.latency.median / served.latency.median:.2f}x).")
    chosen, ties = recommend(runtimes)
    if served.int8:
        # Quantising moves probabilities; whether that costs IoU is measured where the product is judged.
        return verdict + (" Its graph computes in int8, chosen on drives held out of training rather than on "
                          "val (docs/model_history.md, round 9), so its val IoU is reported here, not held to "
                          f"{IOU_TOLERANCE} of TensorFlow's. "
                          + (f"Of the float runtimes, the fastest within {IOU_TOLERANCE} of TensorFlow's val IoU "
                             f"is {chosen.name} ({chosen.latency.median:.1f} ms, "
                             f"{chosen.latency.median / served.latency.median:.2f}x the app's time)."
                             if chosen else "No float runtime kept TensorFlow's val IoU in this run."))
    if abs(change) > IOU_TOLERANCE:
        return verdict + (f" **Its val IoU is not within {IOU_TOLERANCE} of TensorFlow's: the app should serve "
                          f"{chosen.name if chosen else REFERENCE} instead.**")
    if chosen is served:
        return verdict + (f" It is the fastest runtime whose val IoU stays within {IOU_TOLERANCE} of TensorFlow's "
                          "among those that serve without TensorFlow loaded (the runtimes inside TensorFlow "
                          "are timed for comparison only).")
    if served in ties:
        return verdict + (f" The fastest runtime within {IOU_TOLERANCE} of TensorFlow's val IoU in this run is "
                          f"{chosen.name} ({chosen.latency.median:.1f} ms); their latency quartiles overlap, so "
                          "this run cannot tell the two apart.")
    return verdict + (f" **{chosen.name} is measurably faster ({chosen.latency.median:.1f} ms, quartiles apart) "
                      f"and keeps the val IoU within {IOU_TOLERANCE}: the app should switch to it.**")


def runtimes_section(results: Results) -> str:
    reference = next(result for result in results.runtimes if result.name == REFERENCE)
    rows = []
    for result in results.runtimes:
        if result.error:
            rows.append([result.name, "failed", "", "", "", "", result.error])
            continue
        relative = reference.latency.median / result.latency.median if reference.latency else None
        change = result.val_iou - reference.val_iou if reference.val_iou is not None else None
        rows.append([result.name, str(result.latency), number(relative, 2, "x"),
                     number(result.val_iou, 4), number(change, 4), f"{result.max_probability_change:.1e}",
                     result.notes])
    advice = served_runtime_verdict(results.runtimes, reference)
    return "\n\n".join([
        "## 4. CPU serving runtimes for the default model",
        "Each runtime runs the same network inside the engine's own pre- and post-processing, so only the "
        "forward pass differs. Latency: one 480x360 photo end to end (as section 1). Val IoU: car IoU at the "
        f"bundle's threshold over the `val` split of `{repo_path(results.settings.data_dir)}`, through the engine "
        "(`training.evaluate.evaluate_engine`). max |Δp|: the largest probability difference from TensorFlow "
        "on the photo. The app's row runs the ONNX graph the bundle carries (any height and width) in a "
        "session whose height and width are fixed at start to the shape 4:3 photos (and CamVid frames) are fed "
        "at; a photo of another shape runs the same graph left free. The LiteRT row runs the LiteRT graph the "
        "bundle carries, what a bundle without an ONNX graph is served; the row after it converts that graph "
        "from model.keras at start, as the app did before bundles carried graphs. "
        "The other converted rows (TFLite, ONNX) are built for the same one shape.",
        table(["runtime", "latency, ms: median (quartiles)", "speed vs TF", "val IoU", "Δ IoU", "max |Δp|",
               "notes"], rows),
        advice + " " + carried_graphs_verdict(results),
    ])


def carried_graphs_verdict(results: Results) -> str:
    """Whether serving the carried LiteRT graphs kept the per-photo latency and val IoU of converting at start."""
    served, converted = (next(result for result in results.runtimes if result.name == name)
                         for name in (SERVED_LITERT, CONVERTED_AT_START))
    if served.latency is None or converted.latency is None:
        return f"The carried graphs could not be compared with the conversion at start: {served.error or converted.error}."
    change = served.val_iou - converted.val_iou
    overlap = (served.latency.quartiles[0] <= converted.latency.quartiles[1]
               and converted.latency.quartiles[0] <= served.latency.quartiles[1])
    faster = served.latency.median <= converted.latency.median
    measured = (f"val IoU {served.val_iou:.4f} against {converted.val_iou:.4f}, {served.latency.median:.1f} "
                f"against {converted.latency.median:.1f} ms")
    results.targets.append((4, "carried LiteRT graphs: per-photo latency and val IoU as converted at start", measured,
                            abs(change) <= IOU_TOLERANCE / 10 and (overlap or faster)))
    return (f"Served from the LiteRT graph the bundle carries, a photo costs what it did converted at start ({measured}; "
            + ("latency quartiles overlap)." if overlap else "quartiles apart)."))


def training_section(results: Results) -> str:
    settings = results.settings
    seed = next(entry for entry in results.training if entry.pipeline.startswith("seed"))
    rows = [[entry.pipeline, entry.batch_size, number(entry.step_ms), number(entry.images_per_s, 2),
             f"{entry.images_per_s / seed.images_per_s:.2f}x"] for entry in results.training]
    options = ", ".join(f"{key}={value}" for key, value in settings.training_model.items())
    return "\n\n".join([
        "## 5. Training throughput",
        f"The same model in each row: a compact U-Net (`build_model(\"unet\", {options})`, depth 4 unless "
        f"given), BCE loss, Adam, trained on the first {settings.training_frames} "
        f"`train` frames of `{repo_path(settings.data_dir)}` resized to {size_text(settings.training_frame_size)}. The project's "
        "pipeline augments (scale, crop, flip, colour) with crops as large as the frames, so every row trains "
        "on the same pixels per image. Step time: median wall time between the ends of consecutive steps "
        f"({settings.training_steps} steps, after the traced first step and 2 more).",
        table(["pipeline", "batch", "step (ms)", "images/s", "vs seed"], rows),
    ])


def serving_section(results: Results) -> str:
    start_ups = {start_up.variant: start_up for start_up in results.start_ups}
    carried = start_ups[CARRIED]
    rows = [
        ["start to first answer, median (s)", *(f"{statistics.median(start_up.seconds):.1f} ("
                                                 + ", ".join(f"{seconds:.1f}" for seconds in start_up.seconds) + ")"
                                                 for start_up in results.start_ups)],
        ["peak RSS, start to last photo (MiB)", *(number(start_up.peak_rss_mib, 0) for start_up in results.start_ups)],
        ["steady RSS after the photos (MiB)", *(number(start_up.steady_rss_mib, 0) for start_up in results.start_ups)],
        ["TensorFlow loaded into the app", *("yes" if start_up.loaded_tensorflow else "no"
                                             for start_up in results.start_ups)],
    ]
    for name in SHAPE_CLASSES:
        rows.append([f"{name} photo: first after start / warm (ms)",
                     *(f"{start_up.first_ms[name]:,.0f} / {start_up.warm_ms[name]:,.0f} "
                       f"({start_up.first_ms[name] / start_up.warm_ms[name]:.1f}x)" for start_up in results.start_ups)])
    cold_s = statistics.median(carried.seconds)
    worst = max(SHAPE_CLASSES, key=lambda name: carried.first_ms[name] / carried.warm_ms[name])
    worst_ratio = carried.first_ms[worst] / carried.warm_ms[worst]
    results.targets += [
        (6, f"start to first /segment answer <= {COLD_START_TARGET_S:g} s", f"{cold_s:.1f} s",
         cold_s <= COLD_START_TARGET_S),
        (6, f"steady RSS <= {STEADY_RSS_TARGET_MIB} MiB", f"{carried.steady_rss_mib:.0f} MiB",
         carried.steady_rss_mib <= STEADY_RSS_TARGET_MIB),
        (6, f"peak RSS <= {PEAK_RSS_TARGET_MIB} MiB", f"{carried.peak_rss_mib:.0f} MiB",
         carried.peak_rss_mib <= PEAK_RSS_TARGET_MIB),
        (6, f"first photo of each of {', '.join(SHAPE_CLASSES)} after start <= {FIRST_PHOTO_TARGET_RATIO:g}x a warm one",
         f"worst {worst}: {worst_ratio:.1f}x", worst_ratio <= FIRST_PHOTO_TARGET_RATIO),
        (6, "the app never loads TensorFlow", "loaded" if carried.loaded_tensorflow else "not loaded",
         not carried.loaded_tensorflow),
    ]
    load_rows = [[level.callers, len(level.latencies_ms), number(level.requests_per_s, 2),
                  number(level.latency_ms(0.5)), number(level.latency_ms(0.95)), len(level.errors),
                  number(level.peak_rss_mib, 0)] for level in results.load]
    errors = sum(len(level.errors) for level in results.load)
    results.targets.append((7, "no errors under 1, 4 and 16 parallel callers", str(errors), errors == 0))
    first_errors = sorted({error for level in results.load for error in level.errors})[:3]
    return "\n\n".join([
        "## 6. App cold start and memory",
        f"`python app.py` in {results.app_python} (Gradio imports matplotlib at the first request where it "
        "is installed, as in this project's .venv: 0.35-0.45 s here), "
        "with `MODEL_DIR` set to the default model's bundle, on a free loopback port "
        "(`GRADIO_SERVER_PORT`), two ways side by side, launches alternating: serving the graphs the bundle "
        "carries, and the same bundle without them, which the app serves as it served every bundle before "
        "(model.keras loaded with Keras, converted to LiteRT at start, and again at the first photo of "
        "another shape). Start: process start to the first successful `/segment` answer through "
        "`gradio_client` (imports, bundle checks and load, warm-up, server start, the client's handshake once "
        "the page config is served, one 4:3 photo); the app's log splits its own part (imports, model, page). "
        "Then, in "
        "the same process, the first photo of each other shape class (the benchmark photo turned, and "
        "cropped to 16:9), then "
        f"{results.settings.repeats} more of each, interleaved (warm: their median). Memory: resident set of "
        "the app's process and its children: peak from the kernel's high-water mark (VmHWM) from start to the "
        f"last photo, nothing polling the app, steady (psutil) read {SETTLE_S:g} s after it; the shape-class and steady rows are from the last launch. "
        "TensorFlow loaded: whether its libraries are mapped into the app's process.",
        table(["", *(start_up.variant for start_up in results.start_ups)], rows),
        "## 7. Throughput under concurrency",
        f"N `gradio_client` callers in parallel threads of the benchmark process, each sending the photo to "
        f"`/segment` again as soon as it has its answer, for {results.settings.load_seconds:g} s per level "
        "(requests started before the deadline are awaited), against the last app launched above with the "
        "carried graphs. The app runs "
        "one network pass at a time (`NETWORK_CONCURRENCY`), so more callers queue rather than speed up; the "
        "callers share the machine's cores with the app. Each caller's client is given one TLS context for all "
        "its calls (`bench.serving.client_for`): by default gradio_client builds a new one for each of a "
        "request's five HTTP calls, tens of milliseconds each (until 2026-12-04, the figures here "
        "included them). Where one request's time goes: `python -m bench.request_profile`.",
        table(["callers", "requests", "requests/s", "p50 latency (ms)", "p95 latency (ms)", "errors",
               "peak app RSS (MiB)"], load_rows),
        f"Errors: {errors}" + (f" (first: {'; '.join(first_errors)})" if first_errors else "") + ".",
    ])


def clips_section(results: Results) -> str:
    from bench import clips

    for timing in results.clips:
        results.targets += [(8, *target) for target in clips.targets(timing)]
    missed = [timing for timing in results.clips if not all(met for _, _, met in clips.targets(timing))]
    parts = [
        "## 8. Clips",
        f"`bench/clips.py` (`python -m bench.clips`): a {clips.CLIP_SECONDS} s clip at {clips.FPS} fps made from "
        "CamVid's val frames (forward then back), at 480x360 and cropped to 16:9 and scaled up to 1280x720, "
        "through `demo.video.segment_clip` with the default model (decode, network, smoothing, overlay, "
        "H.264 encode; decoding and encoding in threads beside the network), then a threshold move "
        "(`render_clip`: no network). Medians of interleaved rounds.",
        clips.markdown(results.clips, with_targets=False),
    ]
    if missed:
        parts.append("Why missed: " + "; ".join(clips.bottleneck(timing) for timing in missed) + ".")
    return "\n\n".join(parts)


def flicker_section(results: Results) -> str:
    from bench import flicker

    results.targets += [(9, *target) for target in flicker.targets(results.flicker)]
    return flicker.section_text(results.flicker, "## 9. Flicker")


def targets_section(results: Results) -> str:
    rows = [[name, measured, verdict(met)] for _, name, measured, met in results.targets]
    missed = [(section, name) for section, name, _, met in results.targets if not met]
    summary = ("Every target is met." if not missed else
               "Missed: " + "; ".join(f"{name} (section {section})" for section, name in missed)
               + ". The measured reasons and what would close each gap are in those sections.")
    return "\n\n".join(["## Targets", table(["target", "measured", ""], rows), summary])


def render(results: Results) -> str:
    results.targets = []
    sections = [
        header(results),
        machine_section(results),
        end_to_end_section(results),
        slider_section(results),
        efficiency_section(results),
        runtimes_section(results),
        training_section(results),
        serving_section(results),
        *([clips_section(results)] if results.clips else []),
        *([flicker_section(results)] if results.flicker else []),
        targets_section(results),
    ]
    return "\n\n".join(sections) + "\n"
