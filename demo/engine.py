"""The inference engine: RGB photo in, the probability of the bundle's class per original pixel out.

Three steps, each cheap to call on its own, so the UI re-runs only what changed:
`SegmentationEngine.predict_probabilities` (the network, once per image),
`threshold_probabilities` and `overlay_mask` (every slider move, milliseconds).

The feed geometry comes from the bundle's config.json: a model is fed images at
the scale it was trained at. Fixed-size models (``"resize": "stretch"``) get
exactly their input size; fully convolutional ones (``"resize": "keep_aspect"``)
get the photo scaled to the same number of pixels as their training frames,
aspect kept, padded to a multiple of the network's stride. A photo larger than that is
fed with more pixels, up to PHOTO_FEED_PIXELS (see `feed_size`); clips and the live
camera keep the training frames' area, for their frame rate.
"""
from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import cv2
import numpy as np

from demo.bundle import BundleConfig
from demo.runtimes import make_forward

DEFAULT_OVERLAY_COLOUR = (255, 40, 40)
# The most pixels a photo larger than the training frames is fed with (the page's and /segment's photos;
# clips and the live camera keep the training frames' area, for their frame rate). Chosen with `python -m
# training.large_photos` on drives held out of training, laid out 2 x 2 and 3 x 3 as a wider camera sees
# them: car IoU rose with every step measured (3 x 3: 0.53 at 0.17 MP, 0.64, 0.68, 0.72 at 0.69 MP), and
# 0.69 MP (four times the training frames) costs a 1440x1080 photo's network 4x a 480x360 one's (docs/app.md).
PHOTO_FEED_PIXELS = 720 * 960
Result = TypeVar("Result")


def timed(action: Callable[[], Result]) -> tuple[Result, float]:
    """What `action()` returns and the seconds it took: how the app, the evaluation and the
    benchmarks time one inference (or one training step)."""
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def durations_ms(action: Callable[[], object], repeats: int, warmup: int = 2) -> list[float]:
    """Milliseconds of `repeats` calls of `action`, after `warmup` untimed ones."""
    for _ in range(warmup):  # graph tracing and first-touch allocations are not what a user waits for
        action()
    return [1000 * timed(action)[1] for _ in range(repeats)]


def median_ms(action: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """The median of `durations_ms`: the one way the project quotes the time of a repeated action."""
    return statistics.median(durations_ms(action, repeats, warmup))


def round_up_to_stride(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """(height, width) rounded up to multiples of the network's stride: the size it is fed once padded."""
    return tuple(side + -side % stride for side in size)


def feed_size(height: int, width: int, config: BundleConfig, most_pixels: int | None = None) -> tuple[int, int]:
    """The (height, width) a `height` x `width` photo is resized to before the network.

    A fully convolutional model gets the photo at the training frames' area; with `most_pixels`, a
    photo larger than that keeps more of its own pixels, up to `most_pixels`: the network then sees
    a wide or distant scene's small cars at about the size it learnt them, rather than shrunk.
    """
    input_height, input_width = config.input_size
    if config.fixed_input:
        return input_height, input_width
    feed_pixels = input_height * input_width
    if most_pixels is not None:
        feed_pixels = max(feed_pixels, min(height * width, most_pixels))
    scale = math.sqrt(feed_pixels / (height * width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def canonical_input_shape(config: BundleConfig) -> tuple[int, int, int, int]:
    """The (1, H, W, 3) network input of a photo shaped like the training frames.

    A fixed-size ("stretch") model takes only this; a fully convolutional one takes any size,
    but 4:3 street photos all come to this one.
    """
    return 1, *round_up_to_stride(config.input_size, config.stride), 3


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image with area interpolation (training and serving both call this)."""
    height, width = size
    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a label map: nearest neighbour only, so no new class ids appear."""
    height, width = size
    if labels.shape[:2] == (height, width):
        return labels
    return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)


def pad_to_multiple(rgb: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom and right by reflection up to a multiple of the network's stride."""
    height, width = rgb.shape[:2]
    padded_height, padded_width = round_up_to_stride((height, width), multiple)
    pad_bottom, pad_right = padded_height - height, padded_width - width
    if not (pad_bottom or pad_right):
        return rgb
    # Reflection needs the image to be larger than the pad; tiny images replicate edges.
    mode = cv2.BORDER_REFLECT_101 if min(height, width) > max(pad_bottom, pad_right) else cv2.BORDER_REPLICATE
    return cv2.copyMakeBorder(rgb, 0, pad_bottom, 0, pad_right, mode)


@dataclass
class SegmentationEngine:
    """A bundle's network and config, ready to segment photos of any size.

    `model`: the bundle's network (`Bundle.model`: its carried ONNX or LiteRT graphs, or a Keras model).
    `runtime`: "onnxruntime", "litert", "litert-float32", "litert-int8" or "tensorflow" (see
    demo/runtimes.py; default MODEL_RUNTIME, else "onnxruntime").
    After construction it names the runtime actually serving: LiteRT if the bundle carries no usable
    ONNX graph, TensorFlow if LiteRT failed.
    """

    model: object
    config: BundleConfig
    runtime: str | None = None

    def __post_init__(self):
        self._forward, self.runtime = make_forward(self.model, self.runtime, canonical_input_shape(self.config),
                                                   any_shape=not self.config.fixed_input)

    def fed_at(self, size: tuple[int, int]) -> SegmentationEngine:
        """This engine feeding photos at the scale of `size` (height, width) instead, sharing its loaded
        network: the live camera's lighter feed. BundleError for a fixed-size model."""
        twin = copy.copy(self)
        twin.config = self.config.fed_at(size)
        return twin

    @property
    def default_threshold(self) -> float:
        return float(self.config.threshold)

    def warm_up(self) -> None:
        """Run the network once on a blank photo, so the first user need not wait for set-up.

        The photo has the training frames' size: the shape most photos (4:3 street scenes) are fed at.
        """
        self.predict_probabilities(np.zeros((*self.config.input_size, 3), np.uint8))

    @property
    def test_time_flip(self) -> bool:
        return self.config.test_time_flip

    def predict_probabilities(self, rgb: np.ndarray, most_pixels: int | None = None) -> np.ndarray:
        """(H, W) float32 class probabilities aligned with the pixels of `rgb` (H, W, 3 uint8).

        With ``"test_time_flip": true`` in the config, the network also sees the mirrored photo
        and the two answers (the second mirrored back) are averaged: twice the compute, and a
        steadier answer at object edges (the gain is measured and recorded in the bundle).
        """
        return scale_probabilities(self.network_probabilities(rgb, most_pixels), rgb.shape[:2])

    def network_probabilities(self, rgb: np.ndarray, most_pixels: int | None = None) -> np.ndarray:
        """The class probabilities of `rgb` at the size it is fed at (`feed_size`, up to `most_pixels`),
        before `scale_probabilities` brings them to the photo's size: at most a few MB whatever the photo."""
        height, width = rgb.shape[:2]
        resized = resize_image(rgb, feed_size(height, width, self.config, most_pixels))
        probabilities = self._network(resized)
        if self.test_time_flip:
            # Mirror before padding: the padding must stay at the bottom and right of the content.
            mirrored = self._network(np.ascontiguousarray(resized[:, ::-1]))[:, ::-1]
            probabilities = (probabilities + mirrored) * np.float32(0.5)
        return np.ascontiguousarray(probabilities)

    def _network(self, resized: np.ndarray) -> np.ndarray:
        """Probabilities for an already resized photo: padded to the stride, run, cropped back."""
        fed_height, fed_width = resized.shape[:2]
        model_input = pad_to_multiple(resized, self.config.stride)
        output = self._forward(model_input[np.newaxis].astype(np.float32))
        return output[0, :fed_height, :fed_width, 0]


def scale_probabilities(probabilities: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Probabilities from `network_probabilities` at the photo's (height, width), bilinearly."""
    height, width = size
    if probabilities.shape != (height, width):
        probabilities = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(probabilities)


def threshold_probabilities(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """Boolean mask of the class: a pixel is the class when its probability reaches the threshold."""
    return probabilities >= threshold


def overlay_mask(
    rgb: np.ndarray,
    mask: np.ndarray,
    colour: tuple[int, int, int] = DEFAULT_OVERLAY_COLOUR,
    opacity: float = 0.5,
) -> np.ndarray:
    """The photo with the mask's pixels tinted `colour` at `opacity` (0 = invisible, 1 = solid).

    A tinted value depends only on the original and its channel, so the 256 x 3 of them are
    computed once and looked up, much faster on a large photo than float arithmetic.
    OpenCV's masked copy puts them in place faster than numpy's `copyto(where=...)` (measured on a
    480x360 photo): the slider redraws with it (BENCHMARKS.md, section 2, times a slider move).
    """
    values = np.arange(256, dtype=np.float32)[:, np.newaxis]
    table = np.round(values * (1.0 - opacity) + np.asarray(colour, np.float32) * opacity).astype(np.uint8)
    return cv2.copyTo(cv2.LUT(rgb, table[np.newaxis]), mask.astype(np.uint8), rgb.copy())


def mask_stats(mask: np.ndarray, regions_key: str = "car_regions") -> dict:
    """Coverage of the class in percent, and the number of its separate regions under `regions_key`
    (`demo.model_facts.regions_key_for` the class: "car_regions" for cars).

    Regions smaller than 0.02% of the image (at least 16 pixels) are specks, not things of the class.
    """
    coverage = 100.0 * float(np.count_nonzero(mask)) / mask.size
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_area = max(16, int(0.0002 * mask.size))
    regions = int(np.count_nonzero(stats[1:, cv2.CC_STAT_AREA] >= min_area)) if count > 1 else 0
    return {"coverage_percent": round(coverage, 2), regions_key: regions}


def mask_to_png_array(mask: np.ndarray) -> np.ndarray:
    """A boolean mask as a black-and-white uint8 image (the class = 255) for download."""
    return mask.astype(np.uint8) * 255
