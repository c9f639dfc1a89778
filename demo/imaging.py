"""Decode whatever a user uploads into an 8-bit RGB array, or say clearly why not.

Training reads its images through `load_rgb` too, so a PNG or JPEG becomes the
same pixels in both halves of the project.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# A 50-megapixel photo decodes to 150 MB of RGB: the most one request may cost.
# Anything larger is refused from its header, before a byte of pixels is decoded,
# which is also what stops decompression bombs (a few KB of PNG, 900 MP of pixels).
MAX_PIXELS = 50_000_000
# The network sees every photo at about the same pixel count, padded to its stride: a strip
# thinner than that stride is padded to many times the pixels (a 1 x 65,500 strip: 17 times, which
# took seconds and left the network runtime holding far more memory). Up to 20:1 (wider than
# phone panoramas) the padding adds a fraction. Together with MAX_PIXELS this also keeps every
# side under 32,000 pixels, inside what a JPEG (the overlay) can hold.
MAX_ASPECT_RATIO = 20

ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image, np.ndarray]


class ImageError(ValueError):
    """An input that cannot be turned into an RGB image; the message is for the user."""


def load_rgb(source: ImageSource, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return `source` as a (height, width, 3) uint8 RGB array, upright as its EXIF says."""
    if isinstance(source, np.ndarray):
        return array_to_rgb(source)
    image = source if isinstance(source, Image.Image) else _open(source)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"The image is {width}x{height} pixels ({width * height / 1e6:.0f} MP); "
            f"the limit is {max_pixels / 1e6:.0f} MP. Please upload a smaller image."
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"The image is {width}x{height} pixels; its long side may be at most {MAX_ASPECT_RATIO} times "
            "its short side. Please crop it to a less elongated picture."
        )
    try:
        image.seek(0)  # animated GIF/WebP/PNG: the first frame
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError(f"The image could not be decoded; it looks truncated or damaged ({error}).") from error


def _open(source) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("The file is empty.")
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"No such file: {path.name}")
        if path.stat().st_size == 0:
            raise ImageError(f"The file {path.name} is empty.")
    Image.MAX_IMAGE_PIXELS = None  # we enforce our own, clearer limit from the header
    try:
        return Image.open(source)
    except UnidentifiedImageError as error:
        raise ImageError(
            "This file is not an image that can be read (PNG, JPEG, WebP, GIF, BMP and TIFF work)."
        ) from error


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit (or 32-bit integer) grayscale: keep the top 8 bits of the 16-bit range.
        values = np.asarray(image, dtype=np.uint32)
        return array_to_rgb(np.clip(values // 257, 0, 255).astype(np.uint8))
    if image.mode == "F":
        return array_to_rgb(np.asarray(image, dtype=np.float32))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels carry arbitrary colour: show them as white, as a viewer would.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def array_to_rgb(array: np.ndarray) -> np.ndarray:
    """Any numeric HxW, HxWx1, HxWx3 or HxWx4 array to uint8 RGB."""
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"Expected an image array of shape HxW or HxWx3/4, got {array.shape}.")
    if array.size == 0:
        raise ImageError("The image has no pixels.")
    if array.dtype == np.uint16:
        array = (array // 257).astype(np.uint8)
    elif array.dtype.kind == "f":
        scale = 255.0 if np.nanmax(array) <= 1.0 else 1.0
        array = np.clip(np.nan_to_num(array) * scale, 0, 255).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    elif array.shape[2] == 4:
        alpha = array[..., 3:4].astype(np.float32) / 255.0
        array = (array[..., :3] * alpha + 255.0 * (1.0 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(array)
