"""Training throughput: the project's tf.data pipeline with augmentation against the seed's
`model.fit(x, y, batch_size=2)` on arrays in memory, same model, same frames."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEED_BATCH_SIZE = 2
PROJECT_BATCH_SIZE = 8  # training.train's default
WARMUP_STEPS = 2  # after the first step, which traces the graph


@dataclass(frozen=True)
class Throughput:
    pipeline: str
    batch_size: int
    step_ms: float  # median wall time between the ends of consecutive steps

    @property
    def images_per_s(self) -> float:
        return self.batch_size / (self.step_ms / 1000)


def step_timer():
    """A callback recording the wall time at the end of every training step."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step_ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.step_ends.append(time.perf_counter())

        def median_step_ms(self) -> float:
            steps = np.diff(self.step_ends)[WARMUP_STEPS:]
            return 1000 * statistics.median(steps)

    return StepTimer()


def fresh_model(model_options: dict):
    import keras

    from training.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("unet", **model_options)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    return model


def project_pipeline(images, masks, batch_size: int, steps: int, model_options: dict) -> Throughput:
    from training.data import make_dataset

    # Crops as large as the frames, so both ways train on the same number of pixels per image.
    dataset = make_dataset(images, masks, batch_size, stride=16, training=True, augment=True,
                           crop_size=images.shape[1:3])
    timer = step_timer()
    fresh_model(model_options).fit(dataset.repeat(), epochs=1, steps_per_epoch=steps + WARMUP_STEPS + 1,
                                   callbacks=[timer], verbose=0)
    return Throughput("project: training.data.make_dataset (augment) + fit", batch_size, timer.median_step_ms())


def seed_way(images, masks, steps: int, model_options: dict) -> Throughput:
    frames = SEED_BATCH_SIZE * (steps + WARMUP_STEPS + 1)  # one epoch of exactly the steps timed
    x = images[:frames].astype(np.float32)  # 0..255: the model scales inside its graph
    y = masks[:frames, ..., np.newaxis].astype(np.float32)
    timer = step_timer()
    fresh_model(model_options).fit(x, y, batch_size=SEED_BATCH_SIZE, epochs=1, callbacks=[timer], verbose=0)
    return Throughput("seed: arrays in memory, model.fit(x, y, batch_size=2)", SEED_BATCH_SIZE,
                      timer.median_step_ms())


def measure_training(data_dir: Path, frame_size: tuple[int, int], frames: int, steps: int,
                     model_options: dict) -> list[Throughput]:
    from training.data import load_split

    images, masks, _ = load_split(data_dir, "train", frame_size, limit=frames)
    # Few frames (quick mode): repeat them, so that a batch of 8 and the seed's epoch can be filled.
    needed = max(PROJECT_BATCH_SIZE, SEED_BATCH_SIZE * (steps + WARMUP_STEPS + 1))
    repeats = -(-needed // len(images))
    images, masks = np.concatenate([images] * repeats), np.concatenate([masks] * repeats)
    return [
        project_pipeline(images, masks, PROJECT_BATCH_SIZE, steps, model_options),
        project_pipeline(images, masks, SEED_BATCH_SIZE, steps, model_options),
        seed_way(images, masks, steps, model_options),
    ]
