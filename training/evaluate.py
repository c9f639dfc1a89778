"""Evaluate a bundle honestly: through the app's own engine, at each image's original size.

    python -m training.evaluate BUNDLE --data-dir ../shared/data/camvid --split val

Prints a summary, writes evaluation_<split>.json, threshold_sweep_<split>.png and
gallery_<split>.png into the bundle folder, and prints the JSON report as the
last line of stdout. Metrics are pixel counts summed over the whole split.

    python -m training.evaluate BUNDLE --data-dir DATA --input-size 288x384

is a what-if: the photos are fed at another scale, and the report goes to
evaluation_<split>_at_288x384.json; nothing the app reads changes. Held-out runs
evaluated that way let `--update-bundle --held-out ... --input-size 288x384` make the
bundle serve at that scale, chosen on drives it never trained on.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from demo.bundle import BundleError
from demo.bundle_files import atomic_write_text, read_config
from demo.graphs import load_keras_model
from demo.loading import load_bundle
from demo.engine import SegmentationEngine, overlay_mask, round_up_to_stride, threshold_probabilities, timed
from demo.model_facts import CAR, class_words
from training.bundle import BundleDraft, finishing_bundle
from training.data import DEFAULT_GROUP_PATTERN, DataError, binarize, find_pairs, parse_size, read_pair
from training.losses import pixel_counts, scores_from_counts

SWEEP_THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
SWEEP_METRICS = ("iou", "dice", "precision", "recall")


def group_pattern(config) -> str:
    """How the bundle's run split a plain images/ and masks/ folder without a val/ folder, so that
    evaluating it on that folder again measures the same val frames."""
    return config.training.get("group_pattern", DEFAULT_GROUP_PATTERN)


def evaluate_engine(engine: SegmentationEngine, data_dir: Path, split: str, limit: int | None = None,
                    gallery_size: int = 3) -> dict:
    """Metrics of `engine` on a split: at the bundle's threshold, over a sweep, and per image."""
    target = engine.config.target_class.id
    pairs = find_pairs(data_dir, split, group_pattern(engine.config))[:limit]
    thresholds = np.union1d(SWEEP_THRESHOLDS, [engine.default_threshold])
    totals = np.zeros((3, thresholds.size), np.int64)
    per_image, seconds = [], []
    for pair in pairs:
        image, labels = read_pair(pair)
        truth = binarize(labels, target)
        probabilities, image_seconds = timed(lambda: engine.predict_probabilities(image))
        seconds.append(image_seconds)
        counts = np.stack(pixel_counts(truth, probabilities, thresholds))
        totals += counts
        per_image.append((pair.stem, counts))
    sweep = {name: values.tolist() for name, values in scores_from_counts(*totals).items()}
    sweep["threshold"] = thresholds.tolist()
    best = int(np.argmax(sweep["iou"]))
    at_default = int(np.searchsorted(thresholds, engine.default_threshold))
    image_ious = {stem: float(scores_from_counts(*counts[:, best])["iou"]) for stem, counts in per_image}
    ranked = sorted(image_ious, key=image_ious.get)
    return {
        "split": split,
        "images": len(pairs),
        "threshold": engine.default_threshold,
        "metrics": _at(sweep, at_default),
        "best_threshold": thresholds[best].item(),
        "metrics_at_best_threshold": _at(sweep, best),
        "sweep": sweep,
        "per_image_iou": {
            "at_threshold": thresholds[best].item(),
            "mean": float(np.mean(list(image_ious.values()))),
            "median": float(np.median(list(image_ious.values()))),
            "p10": float(np.percentile(list(image_ious.values()), 10)),
            "worst": [[stem, image_ious[stem]] for stem in ranked[:gallery_size]],
            "best": [[stem, image_ious[stem]] for stem in ranked[::-1][:gallery_size]],
            "all": image_ious,
        },
        "seconds_per_image_median": float(np.median(seconds)),
        "runtime": engine.runtime,
        "measured_files": measured_files(engine.config),
        "input_size": list(engine.config.input_size),
        "test_time_flip": engine.test_time_flip,
    }


def measured_files(config) -> dict[str, str]:
    """File -> SHA-256 of what a report measured: model.keras and the graphs the bundle carried. A
    report whose files differ measured something the bundle no longer holds (graphs exported again
    since, say float graphs replaced by int8 ones)."""
    graphs = (config.serving_graphs or {}).get("files") or {}
    return {"model.keras": config.model_sha256, **{name: entry.get("sha256") for name, entry in sorted(graphs.items())}}


def _at(sweep: dict, index: int) -> dict:
    return {name: round(float(sweep[name][index]), 4) for name in SWEEP_METRICS}


# The gallery's colours (Okabe-Ito: told apart with any colour vision). A plain overlay shows what the
# model marked; these also show what it missed, which is what a weak drive needs looked at. Missed is
# reddish purple, not Okabe-Ito's yellow, which street signs and banners share.


def error_legend(singular: str) -> dict[str, tuple[int, int, int]]:
    """The galleries' colours of the class `singular`'s pixels found, wrongly marked and missed, by name."""
    return {f"{singular} found": (0, 158, 115), f"marked, not {singular}": (213, 94, 0),
            f"{singular} missed": (204, 121, 167)}


ERROR_COLOURS = error_legend(CAR)  # the colours (the names are a car bundle's)


def error_overlay(image: np.ndarray, predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`image` with the car pixels found, the pixels wrongly marked car and the car pixels missed
    tinted in ERROR_COLOURS; everything else untouched."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    for region, colour in zip((predicted & truth, predicted & ~truth, truth & ~predicted), ERROR_COLOURS.values()):
        image = overlay_mask(image, region, colour, opacity=0.6)
    return image


def error_view(engine: SegmentationEngine, pair, threshold: float) -> tuple[np.ndarray, float]:
    """A labelled frame as the galleries draw it (`error_overlay` at `threshold`), and its car IoU there."""
    image, labels = read_pair(pair)
    truth = binarize(labels, engine.config.target_class.id).astype(bool)
    predicted = threshold_probabilities(engine.predict_probabilities(image), threshold)
    iou = np.count_nonzero(truth & predicted) / max(1, np.count_nonzero(truth | predicted))
    return error_overlay(image, predicted, truth), iou


def write_gallery(engine: SegmentationEngine, report: dict, data_dir: Path, path: Path) -> None:
    """The best and the worst images of the split at its best threshold, found, wrong and missed pixels
    of the class coloured apart."""
    from training.plots import plot_gallery

    pairs = {pair.stem: pair for pair in find_pairs(data_dir, report["split"], group_pattern(engine.config))}
    threshold = report["best_threshold"]
    # Each titled with the report's own per-image IoU (the figure the report ranked it by).
    rows = [(stem, error_view(engine, pairs[stem], threshold)[0], iou)
            for stem, iou in report["per_image_iou"]["best"] + report["per_image_iou"]["worst"]]
    plot_gallery(rows, path, legend=error_legend(class_words(engine.config)[0]),
                 title=f"best and worst {report['split']} images at threshold {threshold:.2f}")


def write_report(path: Path, report: dict) -> None:
    """An evaluation report as the JSON file the bundle keeps (written atomically)."""
    atomic_write_text(path, json.dumps(report, indent=2) + "\n")


def write_report_files(report: dict, engine: SegmentationEngine, args: argparse.Namespace, folder: Path) -> None:
    """The split's report and, unless --no-plots, its threshold sweep and gallery, into `folder`."""
    write_report(folder / f"evaluation_{args.split}.json", report)
    if not args.no_plots:
        from training.plots import plot_threshold_sweep

        plot_threshold_sweep(report["sweep"], report["best_threshold"], folder / f"threshold_sweep_{args.split}.png",
                             class_words(engine.config)[0])
        write_gallery(engine, report, args.data_dir, folder / f"gallery_{args.split}.png")


def val_metrics_entry(report: dict, at_best: bool = True) -> dict:
    """What config.json records as `metrics.val`: the figures at the best threshold, or at the served one."""
    metrics, threshold = ((report["metrics_at_best_threshold"], report["best_threshold"]) if at_best
                          else (report["metrics"], report["threshold"]))
    return {**metrics, "threshold": threshold, "images": report["images"],
            "per_image_iou_median": round(report["per_image_iou"]["median"], 4)}


def what_if_report_name(split: str, input_size: tuple[int, int]) -> str:
    """Where `--input-size` writes its report: beside the bundle's own, named by the scale it fed."""
    return f"evaluation_{split}_at_{input_size[0]}x{input_size[1]}.json"


def reported_input_size(report: dict, config) -> tuple[int, int] | None:
    """The scale a report's photos were fed at: recorded in it, or (older reports) its bundle's
    `config` (None: no config.json beside the report)."""
    if "input_size" in report:
        return tuple(report["input_size"])
    return config.input_size if config is not None else None


def held_out_reports(holdout_bundles: list[Path], input_size: tuple[int, int]) -> dict[str, dict]:
    """Drive -> the evaluation a `training.holdout` run wrote of the drive it was trained without, with
    photos fed at `input_size` (its evaluation_val.json, or the report of a what-if at that scale).

    Several runs without the same drive (the recipe with other seeds) give that drive their mean: one
    run's held-out figure moves by a few hundredths from seed to seed, more than recipes differ by."""
    from training.holdout import sequence_of

    runs_by_drive: dict[str, list[dict]] = {}
    height, width = input_size
    for bundle_dir in map(Path, holdout_bundles):
        config = read_config(bundle_dir) if (bundle_dir / "config.json").is_file() else None
        candidates = [bundle_dir / "evaluation_val.json", bundle_dir / what_if_report_name("val", input_size)]
        found = {path: json.loads(path.read_text()) for path in candidates if path.is_file()}
        if not found:
            raise BundleError(f"{candidates[0]} is missing: evaluate that held-out run on its val split first.")
        path = next((path for path, report in found.items()
                     if reported_input_size(report, config) == tuple(input_size)), None)
        if path is None:
            raise BundleError(f"{bundle_dir} has no evaluation of its val split fed at {height}x{width}: run "
                              f"`python -m training.evaluate {bundle_dir} --data-dir DATA --input-size {height}x{width}` "
                              f"first, so that every drive is measured at the scale being served.")
        report = found[path]
        current = measured_files(config) if config is not None else None
        if current is not None and report.get("measured_files", current) != current:
            raise BundleError(f"{path} measured files {bundle_dir} no longer holds (its graphs were exported "
                              f"again since?): evaluate it again with --input-size {height}x{width}.")
        drives = sorted({sequence_of(stem) for stem in report["per_image_iou"]["all"]})
        if len(drives) != 1:
            raise BundleError(f"{path} covers drives {drives}; a held-out run's val split is one drive.")
        # A report of another data folder's val (e.g. the real val, evaluated in the same bundle) would
        # otherwise pass for the drive the run never trained on.
        trained_without = config.dataset.val_drives if config is not None else None
        if trained_without and drives != sorted(trained_without):
            raise BundleError(f"{path} measures drive {drives[0]}, but {bundle_dir} was trained without "
                              f"{', '.join(trained_without)}: evaluate it on its own held-out data folder again.")
        runs_by_drive.setdefault(drives[0], []).append(report)
    return {drive: runs[0] if len(runs) == 1 else seed_mean_report(drive, runs)
            for drive, runs in runs_by_drive.items()}


def seed_mean_report(drive: str, runs: list[dict]) -> dict:
    """One held-out report whose sweep is the mean of several runs' sweeps on the same drive."""
    if len({run["images"] for run in runs}) != 1:
        raise BundleError(f"the runs held out of drive {drive} were evaluated on different numbers of frames "
                          f"({', '.join(str(run['images']) for run in runs)}): evaluate each on the same data folder.")
    curves = [{name: dict(zip(run["sweep"]["threshold"], run["sweep"][name])) for name in SWEEP_METRICS}
              for run in runs]
    thresholds = sorted(set.intersection(*(set(curve["iou"]) for curve in curves)))
    sweep = {"threshold": thresholds} | {
        name: [float(np.mean([curve[name][threshold] for curve in curves])) for threshold in thresholds]
        for name in SWEEP_METRICS}
    return {"images": runs[0]["images"], "runs": len(runs), "sweep": sweep,
            "metrics_at_best_threshold": {"iou": max(sweep["iou"])}}


def held_out_threshold(reports: dict[str, dict], tie: float = 0.0) -> float:
    """The threshold with the best IoU averaged over the held-out drives (each drive counts once), or
    the highest one whose mean is within `tie` of that best: the curve is often flat near its top, and
    a model trained on all frames is surer than the runs trained without a drive."""
    def iou_by_threshold(report):
        return dict(zip(report["sweep"]["threshold"], report["sweep"]["iou"]))

    curves = [iou_by_threshold(report) for report in reports.values()]
    common = sorted(set.intersection(*(set(curve) for curve in curves)))
    mean = {threshold: sum(curve[threshold] for curve in curves) / len(curves) for threshold in common}
    best = max(mean.values())
    return max(threshold for threshold in common if mean[threshold] >= best - tie)


def held_out_entry(report: dict, threshold: float) -> dict:
    """A held-out drive's figures at the served threshold (and at its own best, for reference)."""
    at = report["sweep"]["threshold"].index(threshold)
    entry = {**{name: round(report["sweep"][name][at], 4) for name in SWEEP_METRICS},
             "threshold": threshold, "images": report["images"],
             "iou_at_own_best_threshold": round(report["metrics_at_best_threshold"]["iou"], 4)}
    if report.get("runs", 1) > 1:
        entry["runs"] = report["runs"]  # the figures are the mean of that many training runs (seeds)
    return entry


def record_serving_settings(draft: BundleDraft, engine: SegmentationEngine, report: dict,
                            held_out: dict[str, dict] | None = None, tie: float = 0.0) -> None:
    """Make the drafted bundle serve at the measured threshold, flip setting and feed scale, and say so
    (in its config and its threshold_sweep.png; the card follows when the draft is published).

    The threshold is val's best, or, given the evaluations of the same recipe trained without each
    of some drives (`held_out`), the best over those unseen drives, with their figures recorded
    (`metrics.held_out_drives`) and val's at that threshold: nothing is then selected on val.
    A feed scale other than the bundle's (the engine's `input_size`) is recorded only on held-out drives.
    """
    from training.plots import plot_threshold_sweep

    served = held_out_threshold(held_out, tie) if held_out else report["best_threshold"]
    if served != report["threshold"] and held_out:
        raise ValueError("evaluate the bundle at the held-out threshold before recording it")
    engine.config.threshold = served
    config = draft.config
    selected_on = f"held-out drives {', '.join(sorted(held_out))}" if held_out else "val"
    config.threshold, config.test_time_flip = served, engine.test_time_flip
    config.threshold_selected_on = selected_on
    if tuple(engine.config.input_size) != config.input_size:
        if not held_out:
            raise ValueError("a feed scale other than the training one is chosen on held-out drives, not on val")
        config.training.setdefault("input_size", list(config.input_size))  # the size it was trained at
        config.input_size = tuple(engine.config.input_size)
        config.input_size_selected_on = None if config.input_size == config.trained_input_size else selected_on
        config.gflops_per_image = gflops_at_feed_size(draft.folder, config)
    config.metrics.setdefault("val", {}).update(val_metrics_entry(report, at_best=not held_out))
    if held_out:
        config.metrics.setdefault("held_out_drives", {}).update(
            {drive: held_out_entry(drive_report, served) for drive, drive_report in sorted(held_out.items())})
    # The sweep the model card shows is the one that chose the threshold now recorded.
    plot_threshold_sweep(report["sweep"], served, draft.folder / "threshold_sweep.png", class_words(engine.config)[0])


def gflops_at_feed_size(bundle_dir: Path, config) -> float:
    """GFLOPs of one photo fed at the config's scale (padded to the stride), counted on model.keras."""
    from training.models import count_flops

    feed = round_up_to_stride(config.input_size, config.stride)
    return round(count_flops(load_keras_model(bundle_dir), feed) / 1e9, 2)


def summary_lines(report: dict, singular: str = CAR) -> list[str]:
    """The printed summary of a report on the class `singular` (`demo.model_facts.class_words`)."""
    metrics, best = report["metrics"], report["metrics_at_best_threshold"]
    per_image = report["per_image_iou"]
    return [
        f"{report['split']}: {report['images']} images, {singular} pixels counted over the whole split",
        f"  at threshold {report['threshold']:.2f}: IoU {metrics['iou']:.4f}  Dice {metrics['dice']:.4f}  "
        f"precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}",
        f"  best threshold on this split {report['best_threshold']:.2f}: IoU {best['iou']:.4f}  Dice {best['dice']:.4f}  "
        f"precision {best['precision']:.4f}  recall {best['recall']:.4f}",
        f"  per-image IoU: mean {per_image['mean']:.3f}  median {per_image['median']:.3f}  "
        f"10th percentile {per_image['p10']:.3f}  worst {per_image['worst'][0][0]} {per_image['worst'][0][1]:.3f}",
        f"  inference: {report['seconds_per_image_median'] * 1000:.0f} ms per image (median, {report['runtime']}"
        + (f", fed at the scale of {report['input_size'][0]}x{report['input_size'][1]}" if "input_size" in report else "")
        + (", photo and mirror image averaged)" if report.get("test_time_flip") else ")"),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (model.keras + config.json)")
    parser.add_argument("--data-dir", type=Path, required=True, help="CamVid root (SegNet or seed layout)")
    parser.add_argument("--split", default="val", help="split to evaluate: val or test (default val)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument("--no-plots", action="store_true", help="skip the sweep and gallery PNGs")
    parser.add_argument("--test-time-flip", choices=["on", "off"],
                        help="average each photo's answer with its mirror image's (default: as config.json says)")
    parser.add_argument("--input-size", type=parse_size, metavar="HEIGHTxWIDTH",
                        help="feed photos at this scale instead of the bundle's: a what-if whose report goes to "
                             "evaluation_SPLIT_at_HxW.json; with --update-bundle and --held-out, the scale the "
                             "bundle serves from now on")
    parser.add_argument("--update-bundle", action="store_true",
                        help="val only: record the best threshold, these metrics and --test-time-flip in "
                             "config.json and the model card, so the app serves what was measured")
    parser.add_argument("--held-out", nargs="+", type=Path, metavar="HOLDOUT_BUNDLE",
                        help="with --update-bundle: bundles of the same recipe trained without one drive each "
                             "(training.holdout); the threshold is chosen on those drives, not on val, and "
                             "their figures are recorded")
    parser.add_argument("--threshold-tie", type=float, default=0.0, metavar="IOU",
                        help="with --held-out: serve the highest threshold whose mean held-out IoU is within "
                             "IOU of the best (default 0: the best itself)")
    args = parser.parse_args(argv)
    if args.threshold_tie and not args.held_out:
        parser.error("--threshold-tie chooses among held-out drives' thresholds: use it with --held-out")
    if args.held_out and not args.update_bundle:
        parser.error("--held-out chooses the threshold the bundle serves: use it with --update-bundle")
    if args.update_bundle and (args.split != "val" or args.limit):
        parser.error("--update-bundle needs the whole val split: the threshold is selected on val only")
    if args.update_bundle and args.input_size and not args.held_out:
        parser.error("--input-size with --update-bundle changes the scale the app feeds: choose it on "
                     "held-out drives (--held-out), not on val")
    try:
        bundle = load_bundle(args.bundle)
        if args.test_time_flip:
            bundle.config.test_time_flip = args.test_time_flip == "on"
        if args.input_size:
            bundle.feed_at(args.input_size)
        held_out = held_out_reports(args.held_out, bundle.config.input_size) if args.held_out else None
        if held_out:
            bundle.config.threshold = held_out_threshold(held_out, args.threshold_tie)
        engine = SegmentationEngine(bundle.model, bundle.config)
        report = evaluate_engine(engine, args.data_dir, args.split, args.limit)
        report.update(bundle=str(args.bundle))
        if args.update_bundle:
            with finishing_bundle(args.bundle) as draft:
                record_serving_settings(draft, engine, report, held_out, args.threshold_tie)
                write_report_files(report, engine, args, draft.folder)
        # Files in the bundle describe the bundle as it serves; a what-if of the feed scale alone keeps
        # its report under its own name (what --held-out reads at that scale), other what-ifs only print.
        elif not (args.test_time_flip or args.input_size):
            write_report_files(report, engine, args, args.bundle)
        elif args.input_size and not args.test_time_flip:
            path = args.bundle / what_if_report_name(args.split, args.input_size)
            write_report(path, report)
            print(f"what-if report written to {path}")
    except (BundleError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(summary_lines(report, class_words(bundle.config)[0])))
    compact = {key: value for key, value in report.items() if key not in ("sweep",)}
    compact["per_image_iou"] = {k: v for k, v in report["per_image_iou"].items() if k != "all"}
    print(json.dumps(compact))
    return 0


if __name__ == "__main__":
    sys.exit(main())
