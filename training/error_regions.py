"""Where a bundle's errors are: the car regions it misses and the regions it marks wrongly, by size.

    python -m training.error_regions BUNDLE --data-dir runs/holdout-0001TP/data --input-size 360x480

A split's IoU says how much is wrong, not what. This counts, through the app's engine, each ground-truth
car region (a connected component of the label map) and how much of it was found, and each marked region
and how much of it lies off the cars. It prints how the missed and the wrongly marked pixels divide
between small, medium and large regions (share of the frame), the regions with the most missed and
wrongly marked pixels, and the IoU the split would have if those were right. `--gallery PATH` draws the
frames of the most-missed regions with found, wrong and missed pixels coloured apart.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from demo.bundle import BundleError
from demo.loading import load_bundle
from demo.engine import SegmentationEngine, threshold_probabilities
from demo.model_facts import CAR, class_words
from training.data import DataError, binarize, find_pairs, parse_size, read_pair
from training.evaluate import group_pattern

# Region sizes as a share of the frame: a distant car, a car across the street, a bus or van close by.
SIZE_CLASSES = (("small, < 0.5% of the frame", 0.005), ("medium, 0.5-5%", 0.05), ("large, >= 5%", 1.01))


@dataclass(frozen=True)
class Region:
    frame: str
    area: int  # pixels of the region
    wrong: int  # of them, missed (a car region) or not car (a marked region)
    box: tuple[int, int, int, int]  # left, top, width, height
    frame_share: float  # area / frame area

    @property
    def size_class(self) -> str:
        return next(name for name, limit in SIZE_CLASSES if self.frame_share < limit)


def regions_of(mask: np.ndarray, wrong: np.ndarray, frame: str) -> list[Region]:
    """The connected regions of `mask` (8-connected), each with how many of its pixels are `wrong`."""
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    wrong_per_label = np.bincount(labels[wrong], minlength=count)
    return [Region(frame, int(stats[k, cv2.CC_STAT_AREA]), int(wrong_per_label[k]),
                   tuple(int(value) for value in stats[k, :4]), stats[k, cv2.CC_STAT_AREA] / mask.size)
            for k in range(1, count)]


def find_error_regions(engine: SegmentationEngine, data_dir: Path, split: str, threshold: float) -> dict:
    """Pixel totals of a split, and its car regions (with the pixels missed) and marked regions (with the
    pixels off the cars)."""
    totals = {"found": 0, "marked_not_car": 0, "missed": 0}
    car_regions, marked_regions = [], []
    for pair in find_pairs(data_dir, split, group_pattern(engine.config)):
        image, labels = read_pair(pair)
        truth = binarize(labels, engine.config.target_class.id).astype(bool)
        predicted = threshold_probabilities(engine.predict_probabilities(image), threshold)
        missed, not_car = truth & ~predicted, predicted & ~truth
        totals["found"] += int(np.count_nonzero(truth & predicted))
        totals["marked_not_car"] += int(np.count_nonzero(not_car))
        totals["missed"] += int(np.count_nonzero(missed))
        car_regions += regions_of(truth, missed, pair.stem)
        marked_regions += regions_of(predicted, not_car, pair.stem)
    return {"totals": totals, "car_regions": car_regions, "marked_regions": marked_regions}


def share_by_size(regions: list[Region]) -> dict[str, float]:
    """How the wrong pixels of `regions` divide between the size classes (shares summing to 1)."""
    wrong = sum(region.wrong for region in regions) or 1
    return {name: sum(region.wrong for region in regions if region.size_class == name) / wrong
            for name, _ in SIZE_CLASSES}


def iou_if_right(totals: dict, regions: list[Region], kind: str) -> float:
    """The split's IoU with the wrong pixels of `regions` put right (missed ones found, or wrong marks removed)."""
    found, not_car, missed = totals["found"], totals["marked_not_car"], totals["missed"]
    fixed = sum(region.wrong for region in regions)
    if kind == "missed":
        found, missed = found + fixed, missed - fixed
    else:
        not_car -= fixed
    return found / max(1, found + not_car + missed)


def describe(result: dict, top: int, singular: str = CAR) -> str:
    """The printed account of the errors of a model of the class `singular` (`class_words`)."""
    totals = result["totals"]
    found, not_car, missed = totals["found"], totals["marked_not_car"], totals["missed"]
    lines = [f"IoU {found / max(1, found + not_car + missed):.4f}  precision {found / max(1, found + not_car):.4f}  "
             f"recall {found / max(1, found + missed):.4f}  ({missed} {singular} pixels missed, {not_car} marked wrongly)"]
    for kind, regions, pixels, region_name, label in (
            ("missed", result["car_regions"], f"missed {singular} pixels", f"{singular} region", "missed"),
            ("marked_not_car", result["marked_regions"], "wrongly marked pixels", "marked region", f"not {singular}")):
        shares = ", ".join(f"{name} {share:.0%}" for name, share in share_by_size(regions).items())
        lines.append(f"\n{pixels} by the size of their {region_name}: {shares}")
        worst = sorted(regions, key=lambda region: region.wrong, reverse=True)[:top]
        lines.append(f"the {len(worst)} {region_name}s with the most {pixels} (IoU if they were right: "
                     f"{iou_if_right(totals, worst, kind):.4f}):")
        lines += [f"  {region.frame}  {region.wrong:6d} of {region.area:6d} px {label} ({region.wrong / region.area:4.0%})"
                  f"  at x {region.box[0]}, y {region.box[1]}, {region.box[2]}x{region.box[3]}  {region.size_class}"
                  for region in worst]
    return "\n".join(lines)


def write_missed_gallery(engine: SegmentationEngine, data_dir: Path, split: str, threshold: float,
                         regions: list[Region], path: Path, frames: int = 6) -> None:
    """The frames holding the class's most-missed regions, found, wrong and missed pixels coloured apart."""
    from training.evaluate import error_legend, error_view
    from training.plots import plot_gallery

    pairs = {pair.stem: pair for pair in find_pairs(data_dir, split, group_pattern(engine.config))}
    stems = list(dict.fromkeys(region.frame for region in sorted(regions, key=lambda r: r.wrong, reverse=True)))
    rows = [(stem, *error_view(engine, pairs[stem], threshold)) for stem in stems[:frames]]
    singular, _ = class_words(engine.config)
    plot_gallery(rows, path, legend=error_legend(singular),
                 title=f"the {split} frames with the most missed {singular} pixels, at threshold {threshold:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.error_regions", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle folder")
    parser.add_argument("--data-dir", type=Path, required=True, help="CamVid root (SegNet or seed layout)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--input-size", type=parse_size, help="feed the photos at this HEIGHTxWIDTH (default: the bundle's)")
    parser.add_argument("--threshold", type=float, help="default: the bundle's")
    parser.add_argument("--top", type=int, default=10, help="regions listed of each kind")
    parser.add_argument("--gallery", type=Path, help="PNG of the frames with the most missed pixels of the class")
    args = parser.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
        if args.input_size:
            bundle.feed_at(args.input_size)
        engine = SegmentationEngine(bundle.model, bundle.config)
        threshold = engine.default_threshold if args.threshold is None else args.threshold
        result = find_error_regions(engine, args.data_dir, args.split, threshold)
        if args.gallery:
            write_missed_gallery(engine, args.data_dir, args.split, threshold, result["car_regions"], args.gallery)
    except (BundleError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    height, width = engine.config.input_size
    print(f"{args.split} of {args.data_dir}: fed at {height}x{width}, threshold {threshold:.2f}, {engine.runtime}")
    print(describe(result, args.top, class_words(engine.config)[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
