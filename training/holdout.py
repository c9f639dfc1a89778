"""Hold one video sequence out of training: an honest check of how a recipe does on a street it never saw.

    python -m training.holdout --data-dir ../shared/data/camvid --sequence 0006R0 --output-dir runs/holdout-0006R0/data

CamVid's val frames come from the same drive (0016E5) as most training frames, so val flatters.
This writes a SegNet-layout folder of symbolic links: train/ holds every training frame except
the sequence's (the file-name prefix), and val/ holds the sequence's frames. Train on it with
`python -m training.train --data-dir OUTPUT_DIR ...` and compare its val IoU (the unseen street)
with the same bundle evaluated on the real val split. Nothing is copied or changed in the source.

`--from-splits train val` pools the source's val frames in too (a recipe trained on more frames,
measured on a drive it still never saw); the real val split then no longer measures that bundle.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from demo.bundle_files import replace_folder
from training.data import DataError, find_pairs


def sequence_of(stem: str) -> str:
    """The drive a CamVid frame comes from: the file name up to the first underscore."""
    return stem.split("_", 1)[0]


def write_holdout_split(
    data_dir: Path, sequence: str, output_dir: Path, from_splits: tuple[str, ...] = ("train",)
) -> dict[str, int]:
    """Link the frames of from_splits into output_dir: `sequence` as val, the rest as train. Returns the counts."""
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
    parser.add_argument("--from-splits", nargs="+", default=["train"], metavar="SPLIT",
                        help="splits whose frames are pooled (default: train; 'train val' trains on val's too)")
    args = parser.parse_args(argv)
    try:
        counts = write_holdout_split(args.data_dir, args.sequence, args.output_dir, tuple(args.from_splits))
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{args.output_dir}: train {counts['train']} frames, val {counts['val']} frames of {args.sequence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
