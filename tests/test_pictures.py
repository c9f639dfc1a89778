"""The pictures the app hands out (`demo.handlers.encode_picture`, `save_picture`): the formats their names
promise, the mask's pixels exactly, the drawn photo as Pillow's default JPEG had it."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, JpegImagePlugin

from demo.handlers import encode_picture, save_picture
from demo.imaging import load_rgb
from helpers import CAMVID_FIXTURE


def fixture_frame() -> np.ndarray:
    return load_rgb(sorted((CAMVID_FIXTURE / "val").glob("*.png"))[0])


def test_the_mask_png_is_the_mask_exactly():
    mask = (fixture_frame()[..., 0] > 128).astype(np.uint8) * 255
    picture = Image.open(io.BytesIO(encode_picture(mask, ".png")))
    assert picture.format == "PNG" and picture.mode == "L"
    assert np.array_equal(np.asarray(picture), mask)


def test_the_drawn_jpeg_keeps_pillows_default_quality_and_colour_resolution():
    rgb = fixture_frame()
    picture = Image.open(io.BytesIO(encode_picture(rgb, ".jpeg")))
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG")  # how the app encoded it before: quality 75, colour at half resolution
    pillows = Image.open(buffer)
    assert picture.format == "JPEG" and picture.mode == "RGB" and picture.size == (rgb.shape[1], rgb.shape[0])
    assert JpegImagePlugin.get_sampling(picture) == JpegImagePlugin.get_sampling(pillows)
    # RGB order kept (a swap to BGR would move the red and blue channels by far more than this).
    difference = np.abs(np.asarray(picture, np.int16) - np.asarray(pillows, np.int16))
    assert difference.mean() < 1.0 and np.abs(np.asarray(picture, np.int16) - rgb).mean() < 6.0


def test_a_saved_picture_is_named_and_found_by_its_content(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    rgb = fixture_frame()
    first, again = save_picture(rgb, "cars.jpeg"), save_picture(rgb, "cars.jpeg")
    assert first == again and first.startswith(str(tmp_path)) and first.endswith("/cars.jpeg")
    assert Image.open(first).format == "JPEG"
    assert save_picture(rgb[::-1].copy(), "cars.jpeg") != first
