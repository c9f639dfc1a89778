"""The README's table of runs, from the bundles themselves.

    python -m bench.runs_table runs/*/bundle [--image demo/examples/0016E5_08017.png]

One row per bundle: val IoU, Dice, precision and recall at its best threshold
(as `training.train` measured them through the serving engine), the IoU on drives
the recipe never trained on (a `training.holdout` run's own val, or the held-out
figures `training.evaluate --held-out` recorded), parameters,
GFLOPs per image, median epoch time, and the median time of one full inference
of a 480x360 photo through the engine, measured now, on this machine.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from demo.bundle import BundleConfig
from demo.loading import load_bundle
from demo.engine import SegmentationEngine, median_ms
from demo.imaging import load_rgb

DEFAULT_IMAGE = Path(__file__).resolve().parents[1] / "demo" / "examples" / "0016E5_08017.png"


def inference_ms(engine: SegmentationEngine, image, repeats: int) -> float:
    """The median milliseconds of one photo through the engine, after one untimed run (set-up)."""
    return median_ms(lambda: engine.predict_probabilities(image), repeats, warmup=1)


def held_out_text(config: BundleConfig) -> str:
    """IoU on drives the recipe never trained on, each named, or '-' when none was measured."""
    recorded = config.held_out_drives
    if recorded:
        return ", ".join(f"{drive} {values['iou']:.4f}" + (f" (mean of {values['runs']} runs)" if values.get("runs", 1) > 1 else "")
                         for drive, values in sorted(recorded.items()))
    val_drives, train_drives = config.dataset.val_drives, config.dataset.train_drives or []
    if val_drives and not set(val_drives) & set(train_drives):
        return f"{', '.join(val_drives)} {config.metrics['val']['iou']:.4f} (its val)"
    return "-"


def table_row(bundle_dir: Path, image, repeats: int) -> str:
    bundle = load_bundle(bundle_dir)
    config, training = bundle.config, bundle.config.training
    val = config.metrics["val"]
    recipe = (f"{config.architecture} {config.scales_text}, {config.resize.replace('_', '-')}, {training.get('loss')}, "
              f"{'aug' if training.get('augment') else 'no aug'}, {training.get('epochs_run')} ep"
              + (f", EMA {training['ema']}" if training.get("ema") else "")  # bundles from before --ema went
              + (", served mirror-averaged" if config.test_time_flip else ""))
    scores = " | ".join(f"{val[name]:.4f}" if name in val else "-" for name in ("iou", "dice", "precision", "recall"))
    return (f"| {bundle_dir.parent.name} | {recipe} | {scores} | {held_out_text(config)} | {val.get('threshold', config.threshold):.2f} | "
            f"{(config.parameters or 0) / 1e6:.2f} M | "
            f"{config.gflops_per_image or float('nan'):.1f} | {training.get('epoch_time_s_median')} s | "
            f"{inference_ms(SegmentationEngine(bundle.model, config), image, repeats):.0f} ms |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runs_table", description=__doc__.splitlines()[0])
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE, help="a 480x360 photo to time inference on")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    image = load_rgb(args.image)
    print("| run | recipe | val IoU | Dice | precision | recall | held-out drive IoU | best threshold | params "
          "| GFLOPs/image | epoch time | inference 480x360 |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for bundle_dir in args.bundles:
        print(table_row(bundle_dir, image, args.repeats), flush=True)


if __name__ == "__main__":
    main()
