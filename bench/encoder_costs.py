"""What each architecture costs to serve, before anyone trains it: parameters, GFLOPs and the
median time of one 480x360 photo through the app's engine and runtime.

    python -m bench.encoder_costs --input-size 288x384 --repeats 20

Weights are random (latency does not depend on them), written as real bundles with their serving
graphs, so the times are those the app would have with a trained model of the same shape.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from training.data import parse_size

ARCHITECTURES_COMPARED = ("unet", "efficientnet-lite0-unet", "efficientnet-lite1-unet", "efficientnet-lite2-unet")


def cost_row(name: str, input_size: tuple[int, int], folder: Path, image, repeats: int) -> str:
    from bench.runs_table import inference_ms
    from demo.bundle import BundleConfig, DatasetInfo, TargetClass
    from demo.loading import load_bundle
    from demo.engine import SegmentationEngine, canonical_input_shape
    from training.bundle import write_bundle
    from training.models import ARCHITECTURES, build_model, count_flops

    architecture = ARCHITECTURES[name]
    options = {"encoder_weights": None} if architecture.pretrained_encoder else {}
    model = build_model(name, **options)
    config = BundleConfig(architecture=name, input_size=input_size, resize="keep_aspect", stride=architecture.stride,
                          target_class=TargetClass(8, "car"), threshold=0.5,
                          dataset=DatasetInfo(name="none: random weights, for timing"))
    bundle = load_bundle(write_bundle(folder / name, model, config))
    padded = canonical_input_shape(config)[1:3]  # what the engine feeds a 4:3 photo
    gflops = count_flops(model, padded) / 1e9
    milliseconds = inference_ms(SegmentationEngine(bundle.model, bundle.config), image, repeats)
    return (f"| {name} | {model.count_params() / 1e6:.2f} M | {gflops:.2f} | {padded[0]}x{padded[1]} | "
            f"{milliseconds:.0f} ms |")


def main(argv: list[str] | None = None) -> None:
    from bench.runs_table import DEFAULT_IMAGE
    from demo.imaging import load_rgb

    parser = argparse.ArgumentParser(prog="python -m bench.encoder_costs", description=__doc__.splitlines()[0])
    parser.add_argument("--input-size", type=parse_size, default=(288, 384), help="the scale photos are fed at")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES_COMPARED))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args(argv)
    image = load_rgb(DEFAULT_IMAGE)
    print("| architecture | parameters | GFLOPs per image | network input | one 480x360 photo (median) |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.architectures:
            print(cost_row(name, args.input_size, Path(folder), image, args.repeats), flush=True)


if __name__ == "__main__":
    main()
