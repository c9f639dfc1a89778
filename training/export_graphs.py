"""Add or refresh a bundle's serving graphs (`training.graphs`): an ONNX graph and LiteRT graphs.

    python -m training.export_graphs BUNDLE_DIR
    python -m training.export_graphs BUNDLE_DIR --int8 ../shared/data/camvid   # the ONNX graph in int8
    python -m training.export_graphs BUNDLE_DIR --int8 ../shared/data/camvid --calibrate-at 312x416  # served scale

The bundle is copied, completed and checked as the app will check it, then put in place of the
old folder in one rename (`training.bundle`), so a failure leaves the bundle as it was.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demo.bundle import BundleError, onnx_graph_weights
from demo.bundle_files import read_config, verify_bundle
from demo.graphs import load_graphs, load_onnx_graph
from training.bundle import finishing_bundle
from training.data import DataError, parse_size
from training.graphs import CALIBRATION_FRAMES, CALIBRATION_METHODS, GRAPH_SUFFIXES, Calibration


def export_graphs(bundle_dir: Path, calibration: Calibration | None = None) -> dict:
    """Give the bundle at `bundle_dir` fresh graphs (replacing any it has); return their record. With
    `calibration`, its ONNX graph computes in int8 (`training.graphs.write_graphs`)."""
    bundle_dir = Path(bundle_dir)
    if calibration and calibration.feed_size:
        # Refused for a fixed-size model before any work.
        verify_bundle(bundle_dir).fed_at(calibration.feed_size, bundle_dir)
    with finishing_bundle(bundle_dir, leave_out=tuple(f"*{suffix}" for suffix in GRAPH_SUFFIXES)) as draft:
        record = draft.export_graphs(calibration)
        load_graphs(draft.folder, draft.config)  # the app's own checks, before anything is replaced
        load_onnx_graph(draft.folder, draft.config)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_graphs", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (model.keras + config.json)")
    parser.add_argument("--int8", type=Path, metavar="DATA_DIR",
                        help="make the ONNX graph compute in int8, calibrated on this CamVid root's training frames "
                             f"({CALIBRATION_FRAMES} of them, spread over the split): a training-time step, since "
                             "the frames are needed")
    parser.add_argument("--calibration", choices=CALIBRATION_METHODS, default="minmax",
                        help="with --int8: how activation ranges are taken from the frames (default minmax: the "
                             "extremes over all frames; mean-minmax: the mean of each frame's extremes)")
    parser.add_argument("--calibrate-at", type=parse_size, metavar="HxW",
                        help="with --int8: feed the frames at the scale of HxW (default: the bundle's feed scale, "
                             "config.json's input_size); calibrate at the scale the app serves")
    args = parser.parse_args(argv)
    if not args.int8 and (args.calibrate_at or args.calibration != "minmax"):
        parser.error("--calibration and --calibrate-at shape an int8 graph: give --int8 DATA_DIR too")
    calibration = Calibration(args.int8, args.calibration, args.calibrate_at) if args.int8 else None
    try:
        was_int8 = onnx_graph_weights(read_config(args.bundle)) == "int8"
        record = export_graphs(args.bundle, calibration)
    except (BundleError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, entry in record["files"].items():
        shape = "x".join(map(str, entry["input_shape"][1:3])) if entry["input_shape"] else "any height and width"
        weights = entry.get("weights", record["weights"])
        print(f"{args.bundle / name}: {shape}, {weights} weights, {entry['bytes'] / 2**20:.1f} MiB, "
              f"SHA-256 {entry['sha256'][:12]}..., largest difference from model.keras on a random probe image "
              f"{entry['max_difference_from_keras']}")
    if was_int8 and not args.int8:
        print("note: the ONNX graph was int8 and is float now; --int8 DATA_DIR makes it int8 again "
              "(then re-run training.evaluate, whose figures were measured with the int8 graph)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
