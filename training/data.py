"""Data folders to a `tf.data` pipeline of (image, mask of the target class, pixel weight).

Three layouts are understood, all pairing image and label by file stem:
- SegNet:  <root>/train, <root>/trainannot, <root>/val, <root>/valannot, (test, testannot)
- seed:    <root>/images_prepped_train, <root>/annotations_prepped_train, (..._test, ..._val)
- plain:   <root>/images, <root>/masks, (<root>/val/images, <root>/val/masks): anyone's own data, with
           binary masks (the class 255, or 1, the rest 0) or class-id maps (--target-class ID). Without
           a val/ folder, val is whole groups of file names (`plain_split`).

Every pair is checked before training starts; a bad one stops it with a message
that names the file. Images are decoded by the same function the app uses
(`demo.imaging.load_rgb`) and resized with the same area interpolation
(`demo.engine.resize_image`); label maps are resized nearest-neighbour only.
"""
from __future__ import annotations

import argparse
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from demo.engine import resize_image, resize_labels
from demo.imaging import ImageError, load_rgb

CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol",
                  "fence", "car", "pedestrian", "bicyclist", "unlabelled")
CAR_CLASS_ID = 8
MIN_SCALE, MAX_SCALE = 0.75, 1.25  # random scale augmentation range
STRONG_MAX_SCALE = 1.5  # --photometric strong also zooms further in: distant cars seen larger
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
# The target "class id" of binary masks: the value that marks the class (1 in a 0/1 mask).
BINARY_MASK = 255
BINARY_THRESHOLD = 128  # grey edges of a 0/255 mask (anti-aliasing, JPEG) go to the nearer side
# A file's group is the first capture group (or the whole match) of this pattern: CamVid's drive prefix.
DEFAULT_GROUP_PATTERN = r"^([^_]+)_"
VAL_SHARE = 0.2  # the share of groups (or, without groups, of frames) a plain folder holds out as val
NAMED_FILES = 3  # how many files a message names before it counts the rest


def parse_size(text: str) -> tuple[int, int]:
    """A HEIGHTxWIDTH command-line value (frame, crop or feed size) as (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 360x480, got '{text}'") from None
    return height, width


def target_class_arg(text: str) -> int:
    """--target-class: a class id, or a CamVid class's name."""
    if text.isdigit():
        return int(text)
    if text in CAMVID_CLASSES:
        return CAMVID_CLASSES.index(text)
    raise argparse.ArgumentTypeError(f"expected a class id or one of {', '.join(CAMVID_CLASSES)}, got '{text}'")


class DataError(ValueError):
    """A problem with the dataset; the message names the offending file.

    `kind` sorts the problems `check_dataset` finds over many files into one message each."""

    def __init__(self, message: str, kind: str = "other"):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path
    camvid: bool = True  # labels are CamVid class ids 0..11; False: a plain folder's masks, of any value

    @property
    def stem(self) -> str:
        return self.image.stem


def is_plain_layout(data_dir: Path) -> bool:
    """Whether `data_dir` is a folder of anyone's own images/ and masks/ rather than CamVid."""
    return (Path(data_dir) / "images").is_dir() or (Path(data_dir) / "masks").is_dir()


def split_folders(data_dir: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) folders of `split` in whichever CamVid layout `data_dir` uses."""
    data_dir = Path(data_dir)
    layouts = [
        (data_dir / split, data_dir / f"{split}annot"),
        (data_dir / f"images_prepped_{split}", data_dir / f"annotations_prepped_{split}"),
    ]
    for images, labels in layouts:
        if images.is_dir() or labels.is_dir():
            return images, labels
    raise DataError(
        f"No '{split}' split in {data_dir}: expected {split}/ and {split}annot/ (SegNet layout) "
        f"or images_prepped_{split}/ and annotations_prepped_{split}/ (seed layout), "
        f"or images/ and masks/ (your own images and masks)."
    )


def find_pairs(data_dir: Path, split: str, group_pattern: str = DEFAULT_GROUP_PATTERN) -> list[Pair]:
    """Image/label pairs of a split, matched by file stem, sorted by name. A plain folder's "train" and
    "val" are its val/ folder's pairs and the rest, or, without one, `plain_split` of its pairs."""
    if is_plain_layout(data_dir):
        return plain_pairs(Path(data_dir), split, group_pattern)
    images_dir, labels_dir = split_folders(data_dir, split)
    return _pair_folders(images_dir, labels_dir, split)


def _pair_folders(images_dir: Path, labels_dir: Path, split: str, camvid: bool = True) -> list[Pair]:
    what = "label map" if camvid else "mask"
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: the '{split}' split needs both images and {what}s.", "layout")
    images, labels = _files_by_stem(images_dir), _files_by_stem(labels_dir)
    unpaired_images = [images[stem] for stem in sorted(images.keys() - labels.keys())]
    if len(unpaired_images) == 1:
        stem = unpaired_images[0].stem
        raise DataError(f"{unpaired_images[0]} has no {what} in {labels_dir} (expected {stem}.png).", "unpaired")
    if unpaired_images:
        raise DataError(f"{len(unpaired_images)} images in {images_dir} have no {what} of the same name in "
                        f"{labels_dir}: {named(unpaired_images)}.", "unpaired")
    unpaired_labels = [labels[stem] for stem in sorted(labels.keys() - images.keys())]
    if len(unpaired_labels) == 1:
        raise DataError(f"{unpaired_labels[0]} has no image in {images_dir}.", "unpaired")
    if unpaired_labels:
        raise DataError(f"{len(unpaired_labels)} {what}s in {labels_dir} have no image of the same name in "
                        f"{images_dir}: {named(unpaired_labels)}.", "unpaired")
    if not images:
        raise DataError(f"{images_dir} holds no images.", "layout")
    return [Pair(images[stem], labels[stem], camvid) for stem in sorted(images)]


def named(items: list, limit: int = NAMED_FILES, separator: str = ", ") -> str:
    """The first few of `items` and how many more: messages name files without listing thousands."""
    shown = separator.join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def plain_pairs(data_dir: Path, split: str, group_pattern: str = DEFAULT_GROUP_PATTERN) -> list[Pair]:
    """A plain folder's "train" or "val" pairs."""
    if split not in ("train", "val"):
        raise DataError(f"{data_dir} is a folder of images/ and masks/: its splits are train and val, not '{split}'.",
                        "layout")
    pairs = _pair_folders(data_dir / "images", data_dir / "masks", "train", camvid=False)
    if has_val_folder(data_dir):
        return pairs if split == "train" else _pair_folders(data_dir / "val" / "images", data_dir / "val" / "masks",
                                                            "val", camvid=False)
    if len(pairs) < 2:
        raise DataError(f"{data_dir} holds one pair: validation needs another, or a val/images and val/masks folder.",
                        "layout")
    val_stems = plain_split(sorted(pair.stem for pair in pairs), group_pattern)[0]
    return [pair for pair in pairs if (pair.stem in val_stems) == (split == "val")]


def has_val_folder(data_dir: Path) -> bool:
    data_dir = Path(data_dir)
    return (data_dir / "val" / "images").is_dir() or (data_dir / "val" / "masks").is_dir()


def plain_split(stems: list[str], group_pattern: str = DEFAULT_GROUP_PATTERN) -> tuple[set[str], str | None]:
    """The stems held out as val, and why no group could be (None when val is whole groups).

    Val is the last `VAL_SHARE` of the groups in name order (at least one): frames of a street, a
    day, a camera the model never trained on, as leaving one CamVid drive out. Without groups, it is
    that share of frames drawn at random (seed 0), and the reason says why that flatters.
    """
    groups, reason = file_groups(stems, group_pattern)
    if groups is not None:
        names = sorted(set(groups.values()))
        held_out = set(names[-max(1, round(len(names) * VAL_SHARE)):])
        return {stem for stem in stems if groups[stem] in held_out}, None
    return set(random.Random(0).sample(stems, max(1, round(len(stems) * VAL_SHARE)))), reason


def file_groups(stems: list[str], group_pattern: str = DEFAULT_GROUP_PATTERN) -> tuple[dict[str, str] | None, str]:
    """Each stem's group (the pattern's first capture group, or its whole match), or None and why when the
    names make no groups to hold out: the pattern misses a file, every file is its own group, or all share one."""
    pattern = re.compile(group_pattern)
    groups = {}
    for stem in stems:
        match = pattern.search(stem)
        if match is None:
            return None, f"--group-pattern {group_pattern!r} does not match the file name {stem!r}"
        groups[stem] = (match.group(1) if pattern.groups else None) or match.group(0)
    if len(set(groups.values())) == 1:
        only = next(iter(groups.values()))
        return None, f"every file name is in the one group {only!r} (--group-pattern {group_pattern!r})"
    if len(set(groups.values())) == len(groups):
        return None, f"every file name is a group of its own (--group-pattern {group_pattern!r})"
    return groups, ""


def plain_split_groups(data_dir: Path, split: str, group_pattern: str = DEFAULT_GROUP_PATTERN) -> list[str]:
    """The groups a plain folder's split holds, or none when its file names make no groups."""
    pairs = {split_name: find_pairs(data_dir, split_name, group_pattern) for split_name in ("train", "val")}
    groups, _ = file_groups(sorted({pair.stem for split_pairs in pairs.values() for pair in split_pairs}),
                            group_pattern)
    return [] if groups is None else sorted({groups[pair.stem] for pair in pairs[split]})


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """A folder's image files by stem: two of one stem (a.jpg and a.png) could pair either way, so they stop here."""
    files = sorted(_image_files(folder))
    stems = [path.stem for path in files]
    clashes = [path.name for path in files if stems.count(path.stem) > 1]
    if clashes:
        raise DataError(f"{len(clashes)} files in {folder} share a name but not a type, so which of them pairs "
                        f"is unclear: {named(clashes, 2 * NAMED_FILES)}. Keep one of each name.", "unpaired")
    return dict(zip(stems, files))


def _image_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES]


def read_pair(pair: Pair, num_classes: int = len(CAMVID_CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """Decode and check one pair: (H, W, 3) uint8 RGB and (H, W) uint8 labels: CamVid class ids, or a
    plain folder's mask values as they are (`binarize` reads them)."""
    try:
        image = load_rgb(pair.image)
    except ImageError as error:
        raise DataError(f"{pair.image} cannot be read: {error}", "unreadable") from error
    try:
        with Image.open(pair.label) as label_file:
            labels = np.asarray(label_file)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{pair.label} cannot be read: {error}", "unreadable") from error
    if labels.ndim == 3:
        # The seed's annotations repeat the class id in three channels.
        if not (labels[..., :1] == labels[..., : min(3, labels.shape[2])]).all():
            raise DataError(f"{pair.label} is a colour image, not a map of class ids.", "colour")
        labels = labels[..., 0]
    if labels.shape != image.shape[:2]:
        raise DataError(
            f"{pair.label} is {labels.shape[1]}x{labels.shape[0]} but its image {pair.image.name} "
            f"is {image.shape[1]}x{image.shape[0]}.", "size"
        )
    if labels.dtype != np.uint8 and labels.max() > 255:
        raise DataError(f"{pair.label} holds values above 255 (a 16-bit image): save masks as 8-bit PNG.", "values")
    if pair.camvid and labels.max() >= num_classes:
        bad = sorted(int(value) for value in np.unique(labels[labels >= num_classes]))
        raise DataError(f"{pair.label} holds label values {bad[:5]} outside 0..{num_classes - 1}.", "values")
    return image, labels.astype(np.uint8)


def binarize(labels: np.ndarray, target_class: int = CAR_CLASS_ID) -> np.ndarray:
    """1 where the label is the target class (car), 0 everywhere else. For binary masks (`BINARY_MASK`),
    a 0/1 mask's 1, or any other's values >= 128: the class saved as 255, its grey edges to the nearer side."""
    if target_class == BINARY_MASK and labels.max(initial=0) > 1:
        return (labels >= BINARY_THRESHOLD).astype(np.uint8)
    return (labels == (1 if target_class == BINARY_MASK else target_class)).astype(np.uint8)


def load_split(data_dir: Path, split: str, size: tuple[int, int] | None, target_class: int = CAR_CLASS_ID,
               limit: int | None = None, group_pattern: str = DEFAULT_GROUP_PATTERN
               ) -> tuple[np.ndarray, np.ndarray, list[Pair]]:
    """All pairs of a split, checked, resized to `size` (height, width) and binarised.

    Returns uint8 arrays images (N, h, w, 3) and masks (N, h, w), and the pairs.
    """
    pairs = find_pairs(data_dir, split, group_pattern)[:limit]
    images, masks = [], []
    for pair in pairs:
        image, labels = read_pair(pair)
        if size is not None:
            image, labels = resize_image(image, size), resize_labels(labels, size)
        if images and image.shape != images[0].shape:
            raise DataError(f"{pair.image} is {image.shape[1]}x{image.shape[0]}, unlike the rest of the "
                            f"split; pass --input-size to bring every frame to one size.")
        images.append(image)
        masks.append(binarize(labels, target_class))
    return np.stack(images), np.stack(masks), pairs


# How check_dataset sums up each kind of problem, over every file that has it.
PROBLEMS = {
    "unreadable": "a file that cannot be read",
    "colour": "a colour image where the mask should be",
    "size": "a mask of another size than its image",
    "values": "a label map with values that are not CamVid class ids",
    "class_ids": "a mask of values 2..127 and nothing above: class-id maps, not binary masks (pass --target-class ID)",
}


def check_dataset(data_dir: Path, target_class: int, group_pattern: str = DEFAULT_GROUP_PATTERN) -> list[str]:
    """Read every pair of train and val once, before any model is built.

    Raises one DataError for what would make training wrong (the folders, unpaired files, unreadable
    files, sizes, values, no pixel of the class anywhere), naming the first files and a count; returns
    warnings for what can be right but is suspicious (grey mask values read by threshold, val drawn
    from random frames).
    """
    pairs = find_pairs(data_dir, "train", group_pattern) + find_pairs(data_dir, "val", group_pattern)
    problems: dict[str, list[str]] = {}
    grey_files, grey_pixels, class_pixels = [], 0, 0
    for pair in pairs:
        try:
            _, labels = read_pair(pair)
        except DataError as error:
            problems.setdefault(error.kind, []).append(str(error))
            continue
        top = int(labels.max(initial=0))
        if target_class == BINARY_MASK and 1 < top < BINARY_THRESHOLD:
            problems.setdefault("class_ids", []).append(f"{pair.label} (values up to {top})")
            continue
        grey = np.count_nonzero((labels > 0) & (labels < 255)) if target_class == BINARY_MASK and top > 1 else 0
        if grey:
            grey_files.append(pair.label)
            grey_pixels += grey
        class_pixels += int(binarize(labels, target_class).sum())
    for kind, messages in problems.items():
        details = named([message.rstrip(".") for message in messages], separator="; ")
        raise DataError(f"{len(messages)} of the {len(pairs)} pairs have {PROBLEMS[kind]}: {details}.", kind)
    if not class_pixels:
        marked = ("a value of 255 (or 1 in 0/1 masks)" if target_class == BINARY_MASK
                  else f"the class id {target_class}")
        raise DataError(f"No mask in {data_dir} marks a single pixel with {marked}: all {len(pairs)} masks are "
                        f"empty, so there is nothing to learn.", "empty")
    return [message for message in (_grey_warning(grey_files, grey_pixels, len(pairs)),
                                    _random_val_warning(data_dir, group_pattern)) if message]


def _grey_warning(grey_files: list[Path], grey_pixels: int, total: int) -> str | None:
    if not grey_files:
        return None
    return (f"{len(grey_files)} of {total} masks hold grey values between 0 and 255 ({grey_pixels} pixels: "
            f"anti-aliased edges, or saved as JPEG): read as the class where >= {BINARY_THRESHOLD}, else not. "
            f"{named(grey_files)}")


def _random_val_warning(data_dir: Path, group_pattern: str) -> str | None:
    if not is_plain_layout(data_dir) or has_val_folder(data_dir):
        return None
    stems = sorted(pair.stem for split in ("train", "val") for pair in find_pairs(data_dir, split, group_pattern))
    _, reason = plain_split(stems, group_pattern)
    if reason is None:
        return None
    return (f"val is {round(VAL_SHARE * 100)}% of the frames drawn at random, because {reason}: neighbouring "
            f"frames of one scene land in both train and val, so val flatters the model. Give a --group-pattern "
            f"that names each file's scene, or a val/images and val/masks folder of scenes training never sees.")


def make_dataset(images: np.ndarray, masks: np.ndarray, batch_size: int, *, stride: int,
                 training: bool = False, augment: bool = False, crop_size: tuple[int, int] | None = None,
                 seed: int = 0, photometric: str = "basic"):
    """A `tf.data` pipeline yielding (image float32 0..255, mask float32, weight float32) batches.

    The arrays are the cache: every frame is decoded, checked and resized once, up
    front. `training` shuffles each epoch and drops the last partial batch. With
    `augment`, batches are random crops of `crop_size` with augmentation applied
    identically to image and mask (scale, crop, flip) plus colour jitter on the
    image alone (`photometric`: "basic" or "strong", see `_strong_photometric`). Each
    frame is scaled by a random factor in `scale_range(photometric)` before its crop.
    Without `augment`, whole frames are padded to a multiple of `stride`, and the pixels
    padding invented get weight 0, so they count in neither the loss nor the metrics.
    """
    import tensorflow as tf

    parallel = dict(num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    weights = np.ones(masks.shape, np.float32)
    if not augment:
        padded = [_pad_example(image, mask, weight, stride) for image, mask, weight in zip(images, masks, weights)]
        images, masks, weights = (np.stack(parts) for parts in zip(*padded))
    frames = tf.data.Dataset.from_tensor_slices((images, masks, weights))
    dataset = frames.shuffle(len(images), seed=seed, reshuffle_each_iteration=True) if training else frames
    if augment:
        crop_height, crop_width = crop_size or default_crop_size(images.shape[1:3], stride)
        strong = photometric == "strong"
        min_scale, max_scale = scale_range(photometric)

        def scale_crop_flip(image, mask, weight):
            return _scale_crop_flip(image, mask, weight, crop_height, crop_width, min_scale, max_scale)

        dataset = dataset.map(scale_crop_flip, **parallel)
        dataset = dataset.map(lambda image, target: _recolour(image, target, strong), **parallel)
    else:
        dataset = dataset.map(lambda image, mask, weight: (tf.cast(image, tf.float32),
                                                           tf.cast(mask, tf.float32)[..., None], weight[..., None]))
    return dataset.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)


def scale_range(photometric: str) -> tuple[float, float]:
    """The smallest and largest random scale of a training frame: "strong" photometric also zooms further in."""
    return MIN_SCALE, STRONG_MAX_SCALE if photometric == "strong" else MAX_SCALE


def default_crop_size(frame_size: tuple[int, int], stride: int) -> tuple[int, int]:
    """The largest stride-multiple crop that fits a frame scaled down by the smallest
    augmentation scale (0.75), so training crops never contain padding."""
    return tuple(max(stride, int(side * MIN_SCALE) // stride * stride) for side in frame_size)


def _pad_example(image, mask, weight, stride):
    from demo.engine import pad_to_multiple, round_up_to_stride

    height, width = image.shape[:2]
    padded_height, padded_width = round_up_to_stride((height, width), stride)
    padding = ((0, padded_height - height), (0, padded_width - width))
    return pad_to_multiple(image, stride), np.pad(mask, padding), np.pad(weight, padding)


def _scale_crop_flip(image, mask, weight, crop_height, crop_width, min_scale, max_scale):
    """The geometric augmentation: (image float32, target = mask and weight stacked as channels)."""
    import tensorflow as tf

    image = tf.cast(image, tf.float32)
    # Mask and weight travel together through every geometric step, stacked as channels.
    target = tf.stack([tf.cast(mask, tf.float32), weight], axis=-1)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    scale = tf.random.uniform([], min_scale, max_scale)
    new_size = tf.cast(tf.round(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32)
    image = tf.image.resize(image, new_size, method="bilinear", antialias=True)
    target = tf.image.resize(target, new_size, method="nearest")
    # Pad (with weight 0) where the scaled frame is smaller than the crop, then crop.
    pad_height, pad_width = tf.maximum(crop_height, new_size[0]), tf.maximum(crop_width, new_size[1])
    image = tf.image.pad_to_bounding_box(image, 0, 0, pad_height, pad_width)
    target = tf.image.pad_to_bounding_box(target, 0, 0, pad_height, pad_width)
    stacked = tf.image.random_crop(tf.concat([image, target], axis=-1), [crop_height, crop_width, 5])
    stacked = tf.image.random_flip_left_right(stacked)
    return stacked[..., :3], stacked[..., 3:]


def _recolour(image, target, strong):
    """The photometric augmentation, on the image alone (the target is mask and weight stacked)."""
    import tensorflow as tf

    if strong:
        image = _strong_photometric(image)
    else:
        image = tf.image.random_brightness(image, 0.15 * 255.0)
        image = tf.image.random_contrast(image, 0.8, 1.2)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return image, target[..., :1], target[..., 1:]


def _strong_photometric(image):
    """Colour and quality changes aimed at what a model trained on three drives gets wrong on a new
    one: dusk and underexposed scenes (gamma, darker), other cameras (colour casts, saturation,
    contrast), and phone photos (blur, sensor noise, JPEG artefacts). Image float32 0..255."""
    import tensorflow as tf

    def sometimes(probability, transform, x):
        return tf.cond(tf.random.uniform([]) < probability, lambda: transform(x), lambda: x)

    x = image / 255.0
    x = x ** tf.exp(tf.random.uniform([], -0.4, 0.6))  # gamma 0.67..1.8: above 1 darkens the mid-tones
    x = x * tf.random.uniform([], 0.55, 1.2)  # exposure, biased darker
    mean = tf.reduce_mean(x)
    x = (x - mean) * tf.random.uniform([], 0.6, 1.25) + mean  # contrast
    x = x * tf.random.uniform([3], 0.88, 1.12)  # white balance / colour cast
    x = tf.image.adjust_saturation(tf.clip_by_value(x, 0.0, 1.0), tf.random.uniform([], 0.6, 1.3))
    x = sometimes(0.25, lambda y: tf.nn.avg_pool2d(y[None], 3, 1, "SAME")[0], x)  # defocus, motion
    x = sometimes(0.3, lambda y: y + tf.random.normal(tf.shape(y), 0.0, tf.random.uniform([], 0.005, 0.03)), x)
    x = sometimes(0.3, lambda y: tf.image.random_jpeg_quality(tf.clip_by_value(y, 0.0, 1.0), 25, 90), x)
    return x * 255.0
