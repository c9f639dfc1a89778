"""Helpers the test modules share (fixtures are in conftest.py)."""
from __future__ import annotations

from demo.bundle import BundleConfig, TargetClass


def serving_config(input_size: tuple[int, int] = (360, 480), resize: str = "keep_aspect", stride: int = 16,
                   threshold: float = 0.5, **details) -> BundleConfig:
    """A compact U-Net's bundle config: the feed geometry and threshold the engine reads, and any
    other field of `BundleConfig` given (`test_time_flip`, `metrics`, `dataset`, ...)."""
    return BundleConfig(architecture="unet", input_size=input_size, resize=resize, stride=stride,
                        target_class=TargetClass(8, "car"), threshold=threshold, **details)
