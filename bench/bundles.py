"""The bundles the benchmarks serve: the default model (or a stand-in) and the reference vgg16-unet."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

from bench.slider import untrained_bundle
from demo.bundle import Bundle, BundleConfig, TargetClass
from demo.loading import DEFAULT_BUNDLE_DIR, load_bundle
from demo.engine import feed_size, round_up_to_stride

TINY_UNET = {"base_filters": 4, "input_size": (180, 240)}  # quick mode: seconds, not minutes
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServedModel:
    """A loaded bundle, what to call it in the report, and whether its weights were trained."""

    name: str
    bundle: Bundle
    description: str
    trained: bool


def repo_path(path: Path) -> str:
    """`path` as the report names it: relative to the repository (`../shared/...` beside it), so the
    report reads the same from any checkout, never naming the absolute paths of the machine it ran on."""
    return os.path.relpath(Path(path).resolve(), REPO_ROOT)


def size_text(size) -> str:
    return "x".join(map(str, size))


def network_input_size(config: BundleConfig, height: int, width: int) -> tuple[int, int]:
    """The (height, width) the engine feeds the network for a `height` x `width` photo (padding included)."""
    return round_up_to_stride(feed_size(height, width, config), config.stride)


@contextlib.contextmanager
def default_model(bundle_dir: Path | None, quick: bool):
    """`bundle_dir` if given; else demo/default_model (full mode); else an untrained compact U-Net:
    the training default (full mode) or a tiny one (quick mode)."""
    if bundle_dir is None and not quick and DEFAULT_BUNDLE_DIR.is_dir():
        bundle_dir = DEFAULT_BUNDLE_DIR
    if bundle_dir is not None:
        bundle = load_bundle(bundle_dir)
        config = bundle.config
        description = (f"{config.architecture} from `{repo_path(bundle_dir)}` (model.keras SHA-256 "
                       f"{config.model_sha256[:12]}..., {config.scales_text}")
        if bundle.val_iou is not None:
            description += f", val IoU {bundle.val_iou:.4f} at threshold {config.threshold}"
        if config.test_time_flip:
            description += "; served averaged with its mirror image: two network passes a photo"
        yield ServedModel("default", bundle, description + ")", trained=bundle.val_iou is not None)
        return
    options = TINY_UNET if quick else {}
    with untrained_bundle(**options) as folder:
        bundle = load_bundle(folder)
        kind = "tiny (4 base filters)" if quick else "training-default (16 base filters)"
        missing = "" if quick else " (demo/default_model is not there yet)"
        yield ServedModel("default", bundle, f"untrained {kind} compact U-Net fed at "
                                             f"{size_text(bundle.config.input_size)}{missing}", trained=False)


def vgg16_unet(folder: Path, input_size: tuple[int, int]) -> ServedModel:
    """The seed's architecture with untrained weights (its cost does not depend on them), as a bundle."""
    from training.bundle import write_bundle
    from training.models import build_model

    config = BundleConfig(architecture="vgg16-unet", input_size=input_size, resize="stretch", stride=16,
                          target_class=TargetClass(8, "car"), threshold=0.5)
    model = build_model("vgg16-unet", input_size, encoder_weights=None)
    bundle = load_bundle(write_bundle(Path(folder) / "vgg16-unet", model, config))
    return ServedModel("vgg16-unet", bundle, f"vgg16-unet, untrained weights, fed at {size_text(input_size)} "
                                             "(stretched)", trained=False)
