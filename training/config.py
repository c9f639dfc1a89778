"""The training configuration: what `python -m training.train` was asked for, typed and resolved.

The command line (`training.train.build_parser`) owns the flags and their defaults; `TrainingConfig`
is what the rest of training reads. It is frozen, so the run that starts is the run that gets
recorded: `recorded()` is the `training` section of the bundle's config.json.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

# Where the run reads and writes, and how chatty it is: machine-local, so not published with the model.
NOT_RECORDED = frozenset({"verbose", "resume", "data_dir", "output_dir", "dataset_name"})  # dataset.name records the last
# Flags that mean something only for an architecture with a pretrained encoder.
ENCODER_ONLY = frozenset({"encoder_weights", "freeze_encoder", "frozen_epochs", "fine_tune_learning_rate",
                          "encoder_learning_rate"})


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    # Where
    data_dir: Path
    output_dir: Path
    # What is trained
    recipe: str | None  # "seed" (the seed notebook's setup) or "shipped" (the default model's), as defaults
    architecture: str  # a key of training.models.ARCHITECTURES
    input_size: tuple[int, int]  # (height, width) frames are resized to
    resize: str  # how the app feeds photos: "keep_aspect" or "stretch"
    base_filters: int  # width of the compact U-Nets
    target_class: int | None  # class id segmented (8 = car); 255: binary masks; None until the data folder settles it
    class_name: str | None  # what the masks mark (the bundle's target_class.name); None: the CamVid class's
    dataset_name: str | None  # what the bundle says it learnt from; None: CamVid's layout, the folder or Hub repo's name
    group_pattern: str  # an images/ and masks/ folder without val/: what names a file's group
    test_time_flip: bool  # served averaging each photo with its mirror image
    # Pretrained encoders
    encoder_weights: str  # "imagenet", "none", or (vgg16-unet) "hed" or a .h5 path
    freeze_encoder: bool  # train the decoder only
    frozen_epochs: int  # decoder alone for this many epochs, then everything
    fine_tune_learning_rate: float  # the rate once the encoder is unfrozen
    encoder_learning_rate: float  # the encoder's own rate then (the decoder keeps fine_tune_learning_rate)
    init_from: Path | None  # start from this bundle's or checkpoint's weights
    # How
    epochs: int
    batch_size: int
    learning_rate: float
    schedule: str  # "cosine" or "constant"
    loss: str  # "bce", "dice" or "bce+dice"
    augment: bool
    photometric: str  # "basic" or "strong" colour augmentation
    crop_size: tuple[int, int] | None  # random training crops (fully convolutional models)
    keep: str | None  # bundle the "best" (val IoU) or the "last" epoch; None until the data folder settles it
    patience: int | None  # stop after this many epochs without a better val IoU; None: never (a held-out folder)
    seed: int
    limit: int | None  # only the first N frames of each split
    steps_per_epoch: int | None
    strategy: str  # "default" or "mirrored"
    resume: bool
    verbose: int

    @classmethod
    def from_namespace(cls, args: argparse.Namespace) -> TrainingConfig:
        """The parsed command line as a config. Flags a caller's parser adds beyond training's own
        (time_steps' --steps) are left out; a training flag the config lacks fails the test suite."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{name: value for name, value in vars(args).items() if name in names})

    def replace(self, **changes) -> TrainingConfig:
        return dataclasses.replace(self, **changes)

    def recorded(self, pretrained_encoder: bool) -> dict:
        """The settings a bundle publishes: JSON-ready, without local paths or flags that did nothing."""
        recorded = {}
        for field in dataclasses.fields(self):
            if field.name in NOT_RECORDED or (field.name in ENCODER_ONLY and not pretrained_encoder):
                continue
            value = getattr(self, field.name)
            recorded[field.name] = value.name if isinstance(value, Path) else value
        return recorded
