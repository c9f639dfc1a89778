"""End-to-end latency of one photo: the project's engine against the seed's inference steps."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.bundles import ServedModel, network_input_size
from bench.timing import Latency, interleaved_durations_ms
from demo.engine import SegmentationEngine, overlay_mask, threshold_probabilities
from demo.imaging import load_rgb
from demo.runtimes import keras_model_of


@dataclass(frozen=True)
class EndToEnd:
    model: str
    network_input: tuple[int, int]
    engine: Latency
    seed: Latency

    @property
    def speed_up(self) -> float:
        """How many times faster the engine is than the seed's way (medians)."""
        return self.seed.median / self.engine.median


def engine_end_to_end(engine: SegmentationEngine, photo_path: Path) -> np.ndarray:
    """What the app does for a new photo: decode, preprocess, network, resize back, threshold, overlay."""
    rgb = load_rgb(photo_path)
    mask = threshold_probabilities(engine.predict_probabilities(rgb), engine.default_threshold)
    return overlay_mask(rgb, mask)


def seed_end_to_end(model, photo_path: Path, input_size: tuple[int, int], threshold: float) -> np.ndarray:
    """The seed's steps on the same weights: OpenCV decode, cv2.resize, / 255, model.predict, np.where."""
    rgb = cv2.cvtColor(cv2.imread(str(photo_path)), cv2.COLOR_BGR2RGB)  # our models take RGB
    height, width = rgb.shape[:2]
    scaled = cv2.resize(rgb, (input_size[1], input_size[0])) / 255.0
    # The seed fed 0..1; our models normalise inside the graph and take 0..255 (scaling back costs microseconds).
    prediction = model.predict(scaled[np.newaxis] * 255.0, verbose=0)
    mask = np.where(prediction[0, :, :, 0] > threshold, 1, 0).astype(np.uint8)
    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)  # back to the photo, as ours does
    return overlay_mask(rgb, mask.astype(bool))


def measure_end_to_end(served: ServedModel, photo_path: Path, repeats: int, warmup: int) -> EndToEnd:
    config = served.bundle.config
    height, width = load_rgb(photo_path).shape[:2]
    # The seed stretched every photo to its model's input size; for a fully convolutional
    # model that is the engine's feed size rounded up to the stride.
    input_size = network_input_size(config, height, width)
    engine = SegmentationEngine(served.bundle.model, config)
    seed_model = keras_model_of(served.bundle.model)  # the seed ran the Keras model
    durations = interleaved_durations_ms({
        "engine": lambda: engine_end_to_end(engine, photo_path),
        "seed": lambda: seed_end_to_end(seed_model, photo_path, input_size, engine.default_threshold),
    }, repeats, warmup)
    return EndToEnd(served.name, input_size, Latency.of(durations["engine"]), Latency.of(durations["seed"]))
