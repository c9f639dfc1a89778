"""The page's example photos: CamVid frames, each with what it shows and whether the served model trained on it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from demo.bundle import Bundle

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"


@dataclass(frozen=True)
class Example:
    file: str  # in EXAMPLES_DIR
    scene: str
    split: str  # the CamVid split the frame comes from

    @property
    def drive(self) -> str:
        return self.file.split("_")[0]


# CamVid frames with several clearly visible cars, from three drives; the first is shown when the
# page opens. (0016E5_08017.png, also in the folder, is the benchmarks' photo, not an example.)
EXAMPLES = [
    Example("0006R0_f02610.png", "Supermarket car park", "train"),
    Example("0001TP_008010.png", "Shopping street", "train"),
    Example("0016E5_04410.png", "Red bus among cars", "train"),
    Example("0016E5_07967.png", "Parked Mini", "val"),
]


def example_label(example: Example, bundle: Bundle) -> str:
    """The example's scene and whether the served model was trained on it, as far as its bundle says
    (the drives its training split held; `held_out_drives` describe the recipe's other runs, not this model)."""
    train_drives = bundle.config.dataset.train_drives
    if train_drives is not None and example.drive not in train_drives:
        seen = "new to this model"
    elif example.split == "val":
        seen = "validation, not trained on"
    else:
        seen = "trained on"
    return f"{example.scene} (drive {example.drive}: {seen})"
