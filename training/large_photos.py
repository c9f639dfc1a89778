"""Large photos on held-out drives: how many pixels should a photo larger than the training frames get?

    python -m training.large_photos --held-out runs/cars-without-0006R0/bundle runs/holdout-0006R0/data \\
        --held-out runs/cars-without-0001TP/bundle runs/holdout-0001TP/data --input-size 360x480 \\
        --grids 1 2 3 --feeds 360x480 480x640 600x800 720x960 --latency-bundle demo/default_model

A wider or more distant camera sees the same street smaller. To measure that with frames whose truth is
known, each held-out drive's frames are laid side by side in a grid of G x G (consecutive frames, each at
its own resolution: a 2 x 2 grid of 480x360 frames is a 960x720 photo whose cars are half as large once
it is fed at the training frames' area). Every grid is fed at each feed area in turn (its aspect kept, never
more pixels than it has: the engine's `feed_size` with `most_pixels`), its probabilities brought back to
its size and cut into its frames, and each frame is counted once, so the 1 x 1 row is the usual held-out
evaluation. Metrics are pixel counts summed over the drive at one threshold (default 0.50, the shipped
bundle's). Time per photo is the engine's network step (resize, network, crop) on one grid of each size
with --latency-bundle, medians of interleaved rounds, so the rows of one run compare.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path

import numpy as np

from bench.timing import interleaved_durations_ms
from demo.engine import SegmentationEngine, feed_size, scale_probabilities
from demo.loading import load_bundle
from training.data import binarize, find_pairs, parse_size, read_pair
from training.evaluate import group_pattern
from training.losses import pixel_counts, scores_from_counts


def grids_of(frames: list, grid: int) -> list[list[int]]:
    """Indices of the frames in each `grid` x `grid` photo: consecutive frames, row by row; the last photo
    is completed with the drive's first frames, which are counted only where they first appear."""
    per_photo = grid * grid
    count = math.ceil(len(frames) / per_photo)
    return [[(photo * per_photo + place) % len(frames) for place in range(per_photo)] for photo in range(count)]


def tile(pictures: list[np.ndarray], grid: int) -> np.ndarray:
    """`grid` x `grid` pictures of one size side by side, row by row."""
    rows = [np.concatenate(pictures[row * grid:(row + 1) * grid], axis=1) for row in range(grid)]
    return np.concatenate(rows, axis=0)


def drive_counts(engine: SegmentationEngine, frames: list[tuple[np.ndarray, np.ndarray]], grid: int,
                 most_pixels: int, threshold: float) -> np.ndarray:
    """(tp, fp, fn) summed over the drive's frames seen in `grid` x `grid` photos fed at up to `most_pixels`."""
    height, width = frames[0][0].shape[:2]
    totals, seen = np.zeros(3, np.int64), set()
    for members in grids_of(frames, grid):
        photo = tile([frames[index][0] for index in members], grid)
        probabilities = scale_probabilities(engine.network_probabilities(photo, most_pixels), photo.shape[:2])
        for place, index in enumerate(members):
            if index in seen:
                continue
            seen.add(index)
            row, column = divmod(place, grid)
            frame_probabilities = probabilities[row * height:(row + 1) * height, column * width:(column + 1) * width]
            totals += np.concatenate(pixel_counts(frames[index][1], frame_probabilities, np.array([threshold])))
    return totals


def drive_frames(data_dir: Path, engine: SegmentationEngine, split: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB, binary truth) of every frame of the split: the held-out drive's frames, all of one size."""
    frames = []
    for pair in find_pairs(data_dir, split, group_pattern(engine.config)):
        image, labels = read_pair(pair)
        frames.append((image, binarize(labels, engine.config.target_class.id)))
    sizes = {image.shape[:2] for image, _ in frames}
    if len(sizes) != 1:
        raise SystemExit(f"error: {data_dir} {split} holds frames of {len(sizes)} sizes; a grid needs one")
    return frames


def photo_milliseconds(engine: SegmentationEngine, frame: np.ndarray, cases: list[tuple[int, int]],
                       rounds: int) -> dict[tuple[int, int], float]:
    """Median ms of the engine's network step per (grid, most_pixels), measured in interleaved rounds."""
    photos = {grid: tile([frame] * (grid * grid), grid) for grid in {grid for grid, _ in cases}}
    durations = interleaved_durations_ms(
        {case: (lambda grid=case[0], most=case[1]: engine.network_probabilities(photos[grid], most)) for case in cases},
        rounds)
    return {case: statistics.median(values) for case, values in durations.items()}


def distinct_cases(grids: list[int], feeds: list[tuple[int, int]], frame_size: tuple[int, int], config):
    """(grid, most_pixels) pairs worth measuring, and the size each is fed at: a feed area larger than a
    grid's photo feeds it as the photo's own area would, so only the first such one is kept."""
    cases, fed_sizes = [], {}
    for grid in grids:
        for height, width in feeds:
            case = (grid, height * width)
            size = feed_size(grid * frame_size[0], grid * frame_size[1], config, case[1])
            if size not in [fed_sizes[other] for other in cases if other[0] == grid]:
                cases.append(case)
                fed_sizes[case] = size
    return cases, fed_sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.large_photos", description=__doc__.splitlines()[0])
    parser.add_argument("--held-out", nargs=2, action="append", required=True, metavar=("BUNDLE", "DATA_DIR"),
                        help="a run trained without one drive, and the folder whose val split is that drive "
                             "(training.holdout); repeat for each drive")
    parser.add_argument("--grids", nargs="+", type=int, default=[1, 2, 3], metavar="G")
    parser.add_argument("--feeds", nargs="+", type=parse_size, metavar="HEIGHTxWIDTH",
                        default=[(360, 480), (480, 640), (600, 800), (720, 960)],
                        help="feed areas: a photo gets at most this many pixels (its aspect kept)")
    parser.add_argument("--input-size", type=parse_size, metavar="HEIGHTxWIDTH",
                        help="feed the held-out runs at least this scale, as the served bundle is (default: "
                             "each run's own input size)")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--split", default="val")
    parser.add_argument("--latency-bundle", type=Path, help="the bundle whose time per photo is measured")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)

    results: dict[str, dict] = {}
    for bundle_dir, data_dir in args.held_out:
        bundle = load_bundle(Path(bundle_dir))
        if args.input_size:
            bundle.feed_at(args.input_size)
        engine = SegmentationEngine(bundle.model, bundle.config)
        frames = drive_frames(Path(data_dir), engine, args.split)
        frame_size = frames[0][0].shape[:2]
        cases, fed_sizes = distinct_cases(args.grids, args.feeds, frame_size, engine.config)
        name = f"{Path(bundle_dir).parent.name} ({len(frames)} frames)"
        results[name] = {}
        for grid, most_pixels in cases:
            counts = drive_counts(engine, frames, grid, most_pixels, args.threshold)
            results[name][(grid, most_pixels)] = {key: float(value) for key, value in scores_from_counts(*counts).items()}
            print(f"{name} grid {grid} up to {most_pixels} px: IoU {results[name][(grid, most_pixels)]['iou']:.4f}",
                  file=sys.stderr)
    milliseconds = {}
    if args.latency_bundle:
        bundle = load_bundle(args.latency_bundle)
        engine = SegmentationEngine(bundle.model, bundle.config)
        frame = np.random.default_rng(0).integers(0, 256, (*frame_size, 3), np.uint8)
        milliseconds = photo_milliseconds(engine, frame, cases, args.rounds)

    names = list(results)
    print(f"| photo | most pixels fed | fed at | {' | '.join(names)} | mean IoU (P, R) |"
          + (" ms a photo |" if milliseconds else ""))
    print("|---" * (len(names) + 4 + bool(milliseconds)) + "|")
    for grid, most_pixels in cases:
        photo_height, photo_width = grid * frame_size[0], grid * frame_size[1]
        fed_height, fed_width = fed_sizes[(grid, most_pixels)]
        rows = [results[name][(grid, most_pixels)] for name in names]
        mean = {key: statistics.mean(row[key] for row in rows) for key in ("iou", "precision", "recall")}
        line = (f"| {grid}x{grid} frames, {photo_width}x{photo_height} | {most_pixels / 1e6:.2f} MP | "
                f"{fed_width}x{fed_height} | " + " | ".join(f"{row['iou']:.4f}" for row in rows)
                + f" | {mean['iou']:.4f} ({mean['precision']:.2f}, {mean['recall']:.2f}) |")
        if milliseconds:
            line += f" {milliseconds[(grid, most_pixels)]:.1f} |"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
