"""CamVid folders to a `tf.data` pipeline of (image, car mask, pixel weight).

Two layouts are understood, both pairing image and label by file stem:
- SegNet:  <root>/train, <root>/trainannot, <root>/val, <root>/valannot, (test, testannot)
- seed:    <root>/images_prepped_train, <root>/annotations_prepped_train, (..._test, ..._val)

Every pair is checked before training starts; a bad one stops it with a message
that names the file. Images are decoded by the same function the app uses
(`demo.imaging.load_rgb`) and resized with the same area interpolation
(`demo.engine.resize_image`); label maps are resized nearest-neighbour only.
"""
from __future__ import annotations

import argparse
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
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


def parse_size(text: str) -> tuple[int, int]:
    """A HEIGHTxWIDTH command-line value (frame, crop or feed size) as (height, width)."""
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 360x480, got '{text}'") from None
    return height, width


class DataError(ValueError):
    """A problem with the dataset; the message names the offending file."""


@dataclass(frozen=True)
class Pair:
    image: Path
    label: Path

    @property
    def stem(self) -> str:
        return self.image.stem


def split_folders(data_dir: Path, split: str) -> tuple[Path, Path]:
    """The (images, labels) folders of `split` in whichever layout `data_dir` uses."""
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
        f"or images_prepped_{split}/ and annotations_prepped_{split}/ (seed layout)."
    )


def find_pairs(data_dir: Path, split: str) -> list[Pair]:
    """Image/label pairs of a split, matched by file stem, sorted by name."""
    images_dir, labels_dir = split_folders(data_dir, split)
    for folder in (images_dir, labels_dir):
        if not folder.is_dir():
            raise DataError(f"{folder} is missing: the '{split}' split needs both images and labels.")
    images = {path.stem: path for path in _image_files(images_dir)}
    labels = {path.stem: path for path in _image_files(labels_dir)}
    for stem in sorted(images.keys() - labels.keys()):
        raise DataError(f"{images[stem]} has no label map in {labels_dir} (expected {stem}.png).")
    for stem in sorted(labels.keys() - images.keys()):
        raise DataError(f"{labels[stem]} has no image in {images_dir}.")
    if not images:
        raise DataError(f"{images_dir} holds no images.")
    return [Pair(images[stem], labels[stem]) for stem in sorted(images)]


def _image_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES]


def read_pair(pair: Pair, num_classes: int = len(CAMVID_CLASSES)) -> tuple[np.ndarray, np.ndarray]:
    """Decode and check one pair: (H, W, 3) uint8 RGB and (H, W) uint8 class ids."""
    try:
        image = load_rgb(pair.image)
    except ImageError as error:
        raise DataError(f"{pair.image} cannot be read: {error}") from error
    try:
        with Image.open(pair.label) as label_file:
            labels = np.asarray(label_file)
    except (OSError, SyntaxError, ValueError) as error:
        raise DataError(f"{pair.label} cannot be read: {error}") from error
    if labels.ndim == 3:
        # The seed's annotations repeat the class id in three channels.
        if not (labels[..., :1] == labels[..., : min(3, labels.shape[2])]).all():
            raise DataError(f"{pair.label} is a colour image, not a map of class ids.")
        labels = labels[..., 0]
    if labels.shape != image.shape[:2]:
        raise DataError(
            f"{pair.label} is {labels.shape[1]}x{labels.shape[0]} but its image {pair.image.name} "
            f"is {image.shape[1]}x{image.shape[0]}."
        )
    if labels.max() >= num_classes:
        bad = sorted(int(value) for value in np.unique(labels[labels >= num_classes]))
        raise DataError(f"{pair.label} holds label values {bad[:5]} outside 0..{num_classes - 1}.")
    return image, labels.astype(np.uint8)


def binarize(labels: np.ndarray, target_class: int = CAR_CLASS_ID) -> np.ndarray:
    """1 where the label is the target class (car), 0 everywhere else."""
    return (labels == target_class).astype(np.uint8)


def load_split(data_dir: Path, split: str, size: tuple[int, int] | None, target_class: int = CAR_CLASS_ID,
               limit: int | None = None) -> tuple[np.ndarray, np.ndarray, list[Pair]]:
    """All pairs of a split, checked, resized to `size` (height, width) and binarised.

    Returns uint8 arrays images (N, h, w, 3) and masks (N, h, w), and the pairs.
    """
    pairs = find_pairs(data_dir, split)[:limit]
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
