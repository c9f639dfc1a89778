"""Bundles (or one bundle at several feed scales) side by side: one 480x360 photo end to end through the
app's engine, timed in interleaved rounds so that a slow spell of the machine falls on all alike.

    python -m bench.compare_bundles demo/default_model runs/NAME/bundle@312x416 --repeats 30

Each BUNDLE[@HEIGHTxWIDTH] is loaded as the app loads it (its ONNX graph by default; MODEL_RUNTIME
chooses another runtime) and fed at HEIGHTxWIDTH if given, else at its own scale. Prints the median
and quartiles of each, and each median's ratio to the first's: on these machines absolute times move
with the host's speed, ratios measured side by side much less (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.latency import engine_end_to_end
from bench.report import table
from bench.slider import PHOTO
from bench.timing import Latency, interleaved_durations_ms
from demo.bundle import BundleError, onnx_graph_weights
from demo.loading import load_bundle
from demo.engine import SegmentationEngine
from demo.runtimes import describe_runtime
from training.data import parse_size


def bundle_at_scale(text: str) -> tuple[Path, tuple[int, int] | None]:
    """"PATH" or "PATH@HEIGHTxWIDTH" as (path, feed size or None)."""
    path, _, size = text.partition("@")
    return Path(path), parse_size(size) if size else None


def served_engine(path: Path, size: tuple[int, int] | None) -> SegmentationEngine:
    bundle = load_bundle(path)
    if size:
        bundle.feed_at(size)
    return SegmentationEngine(bundle.model, bundle.config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare_bundles", description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", metavar="BUNDLE[@HEIGHTxWIDTH]",
                        help="bundle folders, each optionally fed at another scale")
    parser.add_argument("--repeats", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each first (default 3)")
    parser.add_argument("--photo", type=Path, default=PHOTO, help=f"the photo (default {PHOTO.name}, 480x360)")
    args = parser.parse_args(argv)
    try:
        engines = {text: served_engine(*bundle_at_scale(text)) for text in args.bundles}
    except (BundleError, ValueError, argparse.ArgumentTypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    durations = interleaved_durations_ms(
        {text: lambda engine=engine: engine_end_to_end(engine, args.photo) for text, engine in engines.items()},
        args.repeats, args.warmup)
    first = Latency.of(durations[args.bundles[0]]).median
    rows = []
    for text, engine in engines.items():
        latency = Latency.of(durations[text])
        height, width = engine.config.input_size
        runtime = describe_runtime(engine.runtime, onnx_graph_weights(engine.config))
        rows.append([f"`{text}`", f"{height}x{width}", runtime, str(latency),
                     f"{latency.median / first:.2f}"])
    print(f"One photo ({args.photo.name}) end to end, {args.repeats} interleaved rounds:\n")
    print(table(["bundle", "fed at", "runtime", "latency, ms: median (quartiles)", "ratio to the first"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
