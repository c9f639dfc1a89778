"""Compare feed scales on held-out drives: which size should the app resize photos to?

    python -m training.evaluate runs/holdout-0006R0/bundle --data-dir runs/holdout-0006R0/data --input-size 288x384
    ...  (once per held-out run and scale)
    python -m training.feed_scales runs/holdout-0006R0/bundle runs/holdout-0001TP/bundle \
        --sizes 240x320 288x384 336x448

Reads the evaluations `training.evaluate` wrote of each held-out run (a recipe trained without one
drive, evaluated on it) at each scale, and prints one row per scale: the threshold the drives choose
together, each drive's IoU at it, their mean, and the pixels fed relative to the largest scale (the
compute of a fully convolutional network grows with them). The scale marked "chosen" is the one with
the fewest pixels whose mean is within --tie of the best: a difference that small is within what a
drive's few dozen frames move. Several runs held out of the same drive (one recipe, other seeds) count as
their mean, so recipes are compared by seed means. Nothing is selected on val here; record the chosen scale with
`training.evaluate BUNDLE --update-bundle --held-out ... --input-size HxW`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from demo.bundle import BundleError
from training.data import parse_size
from training.evaluate import held_out_entry, held_out_reports, held_out_threshold


def scale_row(holdout_bundles: list[Path], size: tuple[int, int], threshold_tie: float = 0.0) -> dict:
    """The held-out figures of one feed scale: threshold chosen on the drives, IoU per drive, mean."""
    reports = held_out_reports(holdout_bundles, size)
    threshold = held_out_threshold(reports, threshold_tie)
    ious = {drive: held_out_entry(report, threshold)["iou"] for drive, report in sorted(reports.items())}
    runs = {drive: report.get("runs", 1) for drive, report in reports.items()}
    return {"size": size, "threshold": threshold, "ious": ious, "runs": runs,
            "mean_iou": sum(ious.values()) / len(ious)}


def pixels(row: dict) -> int:
    return row["size"][0] * row["size"][1]


def chosen_row(rows: list[dict], tie: float) -> dict:
    """The cheapest scale whose held-out mean is within `tie` of the best one's."""
    best = max(row["mean_iou"] for row in rows)
    return min((row for row in rows if row["mean_iou"] >= best - tie), key=pixels)


def table_lines(rows: list[dict], tie: float) -> list[str]:
    largest = max(map(pixels, rows))
    drives = list(rows[0]["ious"])
    # A drive held out of several runs (seeds) reads their mean; the header says how many.
    names = [drive + (f" ({rows[0]['runs'][drive]} runs)" if rows[0]["runs"][drive] > 1 else "") for drive in drives]
    lines = [f"| feed scale | threshold | {' | '.join(names)} | mean IoU | pixels |",
             "|---" * (len(drives) + 4) + "|"]
    best, chosen = max(row["mean_iou"] for row in rows), chosen_row(rows, tie)
    for row in rows:
        height, width = row["size"]
        mark = " (best)" if row["mean_iou"] == best else ""
        mark += " (chosen)" if row is chosen else ""
        lines.append(f"| {height}x{width} | {row['threshold']:.2f} | "
                     + " | ".join(f"{row['ious'][drive]:.4f}" for drive in drives)
                     + f" | {row['mean_iou']:.4f}{mark} | {pixels(row) / largest:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.feed_scales", description=__doc__.splitlines()[0])
    parser.add_argument("holdout_bundles", nargs="+", type=Path, help="held-out runs of one recipe (training.holdout)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, required=True, metavar="HEIGHTxWIDTH")
    parser.add_argument("--tie", type=float, default=0.005,
                        help="mean IoUs this close to the best count as equal; the cheapest of them is chosen")
    parser.add_argument("--threshold-tie", type=float, default=0.0, metavar="IOU",
                        help="each scale's threshold: the highest whose mean IoU is within IOU of the best "
                             "(as training.evaluate --threshold-tie; default 0: the best itself)")
    args = parser.parse_args(argv)
    try:
        rows = [scale_row(args.holdout_bundles, size, args.threshold_tie) for size in args.sizes]
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(table_lines(rows, args.tie)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
