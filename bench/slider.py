"""Why the app keeps probabilities: a slider move against a full inference, on one 480x360 photo.

    python -m bench.slider [--bundle DIR] [--repeats N]

A full inference is what a new photo costs (network + threshold + overlay); a slider
move is what the app does when the threshold moves (threshold + overlay of the kept
probabilities). Prints the median of each and their ratio. The bundle defaults to
demo/default_model, else a temporary untrained compact U-Net (same cost as a trained one).
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from demo.bundle import BundleConfig, BundleError, TargetClass  # noqa: E402
from demo.loading import DEFAULT_BUNDLE_DIR, load_bundle
from demo.engine import SegmentationEngine, mask_stats, median_ms, overlay_mask, threshold_probabilities  # noqa: E402
from demo.imaging import load_rgb  # noqa: E402

PHOTO = Path(__file__).resolve().parent.parent / "demo" / "examples" / "0016E5_08017.png"  # a 480x360 CamVid frame
# A person dragging the slider: every move asks for another threshold.
SLIDER_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7)
WARMUP_RUNS = 2


@dataclass(frozen=True)
class SliderTiming:
    """Medians in milliseconds."""

    full_inference_ms: float  # network + threshold + overlay
    slider_ms: float  # threshold + overlay of the kept probabilities
    slider_with_stats_ms: float  # ... + coverage stats, as the app redraws
    stats_ms: float  # the coverage stats alone


@contextlib.contextmanager
def untrained_bundle(base_filters: int = 16, input_size: tuple[int, int] = (360, 480)):
    """A compact U-Net bundle, untrained (it costs what a trained one costs); by default the
    training default (16 base filters, fed at 360x480). Deleted on exit."""
    import keras

    from training.bundle import write_bundle
    from training.models import build_model

    keras.utils.set_random_seed(0)  # the same untrained weights every run
    config = BundleConfig(architecture="unet", input_size=input_size, resize="keep_aspect", stride=16,
                          target_class=TargetClass(8, "car"), threshold=0.5)
    with tempfile.TemporaryDirectory() as folder:
        yield write_bundle(Path(folder) / "untrained", build_model("unet", base_filters=base_filters), config)


def measure_slider(engine: SegmentationEngine, photo, repeats: int, warmup: int = WARMUP_RUNS) -> SliderTiming:
    """Time a full inference of `photo` (RGB array) and a slider move over its kept probabilities."""
    threshold = engine.default_threshold
    kept_probabilities = engine.predict_probabilities(photo)
    slider_thresholds = itertools.cycle(SLIDER_THRESHOLDS)

    def full_inference():
        overlay_mask(photo, threshold_probabilities(engine.predict_probabilities(photo), threshold))

    def slider_move():
        overlay_mask(photo, threshold_probabilities(kept_probabilities, next(slider_thresholds)))

    def slider_move_with_stats():
        mask = threshold_probabilities(kept_probabilities, next(slider_thresholds))
        overlay_mask(photo, mask)
        mask_stats(mask)

    kept_mask = threshold_probabilities(kept_probabilities, threshold)
    return SliderTiming(median_ms(full_inference, repeats, warmup), median_ms(slider_move, repeats, warmup),
                        median_ms(slider_move_with_stats, repeats, warmup),
                        median_ms(lambda: mask_stats(kept_mask), repeats, warmup))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slider", description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="model bundle folder (default: demo/default_model if present)")
    parser.add_argument("--repeats", type=int, default=20, help="timed runs of each (default 20)")
    args = parser.parse_args(argv)

    bundle_dir = args.bundle or (DEFAULT_BUNDLE_DIR if DEFAULT_BUNDLE_DIR.is_dir() else None)
    with contextlib.nullcontext(bundle_dir) if bundle_dir else untrained_bundle() as folder:
        try:
            bundle = load_bundle(folder)
        except BundleError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        description = f"{bundle.path}" if bundle_dir else "a temporary untrained compact U-Net (no default model yet)"
        engine = SegmentationEngine(bundle.model, bundle.config)
        photo = load_rgb(PHOTO)
        timing = measure_slider(engine, photo, args.repeats)

    height, width = photo.shape[:2]
    fed_height, fed_width = bundle.config.input_size
    print(f"bundle: {description} ({bundle.config.architecture}, fed at {fed_height}x{fed_width})")
    print(f"photo: {PHOTO.name}, {width}x{height}; medians of {args.repeats} runs after {WARMUP_RUNS} warm-ups")
    print(f"full inference (network + threshold + overlay): {timing.full_inference_ms:9.2f} ms")
    print(f"slider move (threshold + overlay):              {timing.slider_ms:9.2f} ms")
    print(f"slider move + coverage stats (as the app):      {timing.slider_with_stats_ms:9.2f} ms")
    print(f"ratio: a slider move is {timing.full_inference_ms / timing.slider_ms:.0f}x faster than a full inference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
