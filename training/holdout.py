"""Hold one video sequence out of training: an honest check of how a recipe does on a street it never saw.

    python -m training.holdout --data-dir ../shared/data/camvid --sequence 0006R0 --output-dir runs/holdout-0006R0/data

CamVid's val frames come from the same drive (0016E5) as most training frames, so val flatters.
This writes a SegNet-layout folder of symbolic links: train/ holds every training frame except
the sequence's (the file-name prefix), and val/ holds the sequence's frames. Train on it with
`python -m training.train --data-dir OUTPUT_DIR ...` and compare its val IoU (the unseen street)
with the same bundle evaluated on the real val split. Nothing is copied or changed in the source.

`--from-splits train val` pools the source's val frames in too (a recipe trained on more frames,
measured on a drive it still never saw); the real val split then no longer measures that bundle.

`--target-class pedestrian` (a CamVid class name or id) writes the folder in the layout of your own
data instead: images/ and masks/ (the class 255, the rest 0) for training, val/images and val/masks
for the held-out drive; train on it with `--class-name`. The worked example of docs/training.md.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from demo.bundle_files import replace_folder
from training.data import BINARY_MASK, CAMVID_CLASSES, DataError, Pair, find_pairs, target_class_arg


def sequence_of(stem: str) -> str:
    """The drive a CamVid frame comes from: the file name up to the first underscore."""
    return stem.split("_", 1)[0]


def write_holdout_split(
    data_dir: Path, sequence: str, output_dir: Path, from_splits: tuple[str, ...] = ("train",),
    target_class: int | None = None,
) -> dict[str, int]:
    """Write output_dir from the frames of from_splits: `sequence` as val, the rest as train. Returns the counts.

    Without target_class, a SegNet-layout folder of symbolic links; with it, the plain layout of anyone's
    own data: images linked, masks written as 0/255 PNG of that class."""
    pairs = [pair for split in from_splits for pair in find_pairs(data_dir, split)]
    stems = [pair.stem for pair in pairs]
    for stem in sorted({stem for stem in stems if stems.count(stem) > 1}):
        raise DataError(f"Frame '{stem}' is in more than one of the splits {list(from_splits)}: pool distinct frames only.")
    held_out = [pair for pair in pairs if sequence_of(pair.stem) == sequence]
    kept = [pair for pair in pairs if sequence_of(pair.stem) != sequence]
    if not held_out:
        found = sorted({sequence_of(pair.stem) for pair in pairs})
        raise DataError(f"No frame of sequence '{sequence}' in {data_dir} ({', '.join(from_splits)}); "
                        f"its sequences are {found}.")
    output_dir = Path(output_dir)
    staging = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for split, split_pairs in (("train", kept), ("val", held_out)):
        if target_class is None:
            _link_segnet_split(staging, split, split_pairs)
        else:
            _write_plain_split(staging / ("val" if split == "val" else ""), split_pairs, target_class)
    replace_folder(staging, output_dir)
    return {"train": len(kept), "val": len(held_out)}


def _link_segnet_split(root: Path, split: str, pairs: list[Pair]) -> None:
    for folder in (root / split, root / f"{split}annot"):
        folder.mkdir(parents=True)
    for pair in pairs:
        (root / split / pair.image.name).symlink_to(pair.image.resolve())
        (root / f"{split}annot" / pair.label.name).symlink_to(pair.label.resolve())


def _write_plain_split(root: Path, pairs: list[Pair], target_class: int) -> None:
    """images/ linked to the originals; masks/ the target class as 255 and every other id as 0."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for pair in pairs:
        (root / "images" / pair.image.name).symlink_to(pair.image.resolve())
        labels = np.asarray(Image.open(pair.label))
        mask = np.where(labels == target_class, BINARY_MASK, 0).astype(np.uint8)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"{pair.stem}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.holdout", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CamVid root (SegNet or seed layout)")
    parser.add_argument("--sequence", required=True, help="file-name prefix of the drive to hold out, e.g. 0006R0")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder to write (replaced if present)")
    parser.add_argument("--from-splits", nargs="+", default=["train"], metavar="SPLIT",
                        help="splits whose frames are pooled (default: train; 'train val' trains on val's too)")
    parser.add_argument("--target-class", type=target_class_arg, metavar="CLASS",
                        help="write images/ and masks/ (0/255) of this CamVid class (name or id) instead of links "
                             "to the label maps: the layout of your own data")
    args = parser.parse_args(argv)
    if args.target_class is not None and args.target_class >= len(CAMVID_CLASSES):
        parser.error(f"--target-class {args.target_class} is no CamVid class: the ids are 0..{len(CAMVID_CLASSES) - 1}")
    try:
        counts = write_holdout_split(args.data_dir, args.sequence, args.output_dir, tuple(args.from_splits),
                                     args.target_class)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.output_dir}: train {counts['train']} frames, val {counts['val']} frames of {args.sequence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
