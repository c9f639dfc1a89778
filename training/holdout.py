"""Hold one video sequence out of training: an honest check of how a recipe does on a street it never saw.

    python -m training.holdout --data-dir ../shared/data/camvid --sequence 0006R0 --output-dir runs/holdout-0006R0/data

CamVid's val frames come from the same drive (0016E5) as most training frames, so val flatters.
This writes a SegNet-layout folder of symbolic links: train/ holds every training frame except
the sequence's (the file-name prefix), and val/ holds the sequence's frames. Train on it with
`python -m training.train --data-dir OUTPUT_DIR ...` and compare its val IoU (the unseen street)
with the same bundle evaluated on the real val split. Nothing is copied or changed in the source.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from demo.bundle import replace_folder
from training.data import DataError, find_pairs


def sequence_of(stem: str) -> str:
    """The drive a CamVid frame comes from: the file name up to the first underscore."""
    return stem.split("_", 1)[0]


def write_holdout_split(data_dir: Path, sequence: str, output_dir: Path) -> dict[str, int]:
    """Link the training frames into output_dir: `sequence` as val, the rest as train. Returns the counts."""
    pairs = find_pairs(data_dir, "train")
    held_out = [pair for pair in pairs if sequence_of(pair.stem) == sequence]
    kept = [pair for pair in pairs if sequence_of(pair.stem) != sequence]
    if not held_out:
        found = sorted({sequence_of(pair.stem) for pair in pairs})
        raise DataError(f"No training frame of sequence '{sequence}' in {data_dir}; its sequences are {found}.")
    output_dir = Path(output_dir)
    staging = output_dir.with_name(f".{output_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for split, split_pairs in (("train", kept), ("val", held_out)):
        for folder in (staging / split, staging / f"{split}annot"):
            folder.mkdir(parents=True)
        for pair in split_pairs:
            (staging / split / pair.image.name).symlink_to(pair.image.resolve())
            (staging / f"{split}annot" / pair.label.name).symlink_to(pair.label.resolve())
    replace_folder(staging, output_dir)
    return {"train": len(kept), "val": len(held_out)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.holdout", description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="CamVid root (SegNet or seed layout)")
    parser.add_argument("--sequence", required=True, help="file-name prefix of the drive to hold out, e.g. 0006R0")
    parser.add_argument("--output-dir", type=Path, required=True, help="folder to write (replaced if present)")
    args = parser.parse_args(argv)
    try:
        counts = write_holdout_split(args.data_dir, args.sequence, args.output_dir)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.output_dir}: train {counts['train']} frames, val {counts['val']} frames of {args.sequence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
