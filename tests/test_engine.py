"""The inference engine and image decoding, without Gradio.

The exactness tests wrap a model whose output is a known function of the pixels
(a 1x1 convolution on the red channel), so any misalignment, flip, channel swap
or off-by-one in resizing, padding or cropping shows up as wrong pixels.
"""
from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from PIL import Image

from demo.bundle import BundleConfig
from demo.engine import SegmentationEngine, feed_size, mask_stats, overlay_mask, threshold_probabilities
from demo.imaging import MAX_ASPECT_RATIO, ImageError, load_rgb
from demo.loading import load_bundle
from helpers import (
    animated_gif,
    camvid_png_bytes,
    cmyk_jpeg,
    decompression_bomb_png,
    grayscale_png,
    jpeg_bytes,
    palette_png,
    serving_config,
    sixteen_bit_png,
    transparent_rgba_png,
)

STRIDE = 16
# How the tiny test bundle is fed: photos scaled to 180x240's pixel count, padded to a multiple of 16.
TINY_FEED = serving_config((180, 240), "keep_aspect", STRIDE, threshold=0.5)


def image_encoding(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """An RGB image whose red channel is the mask; green and blue are noise the model must ignore."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (*mask.shape, 3), dtype=np.uint8)
    rgb[..., 0] = np.where(mask, 255, 0)
    return rgb


def keep_aspect_config(height: int, width: int, test_time_flip: bool = False) -> BundleConfig:
    # Trained at the photo's own pixel count: no resizing, only padding to the stride and cropping back.
    return serving_config((height, width), "keep_aspect", STRIDE, test_time_flip=test_time_flip)


@pytest.mark.parametrize("test_time_flip", [False, True])
@pytest.mark.parametrize("height, width", [(359, 481), (1000, 37), (37, 1000), (1, 1), (1, 17), (15, 2), (16, 16)])
def test_any_mask_survives_padding_and_cropping_to_the_pixel(mask_model, height, width, test_time_flip):
    mask = np.random.default_rng(height * width).random((height, width)) < 0.3
    engine = SegmentationEngine(mask_model, keep_aspect_config(height, width, test_time_flip))

    probabilities = engine.predict_probabilities(image_encoding(mask))

    assert probabilities.shape == (height, width)
    np.testing.assert_array_equal(threshold_probabilities(probabilities, 0.5), mask)


@pytest.mark.parametrize("resize", ["stretch", "keep_aspect"])
def test_block_mask_survives_downscaling_and_upscaling_to_the_pixel(mask_model, resize):
    # Fed at half size: area downscaling of 4x4-pixel blocks is exact, and bilinear
    # upscaling keeps every pixel on its own block's side of 0.5.
    blocks = np.random.default_rng(1).random((90, 120)) < 0.4
    mask = np.kron(blocks, np.ones((4, 4), bool))  # 360x480, like a CamVid frame
    engine = SegmentationEngine(mask_model, serving_config((180, 240), resize, STRIDE))

    probabilities = engine.predict_probabilities(image_encoding(mask))

    assert probabilities.shape == (360, 480)
    np.testing.assert_array_equal(threshold_probabilities(probabilities, 0.5), mask)


def test_flip_averaging_is_the_mean_of_the_photo_and_its_mirror_image():
    # A model that looks one pixel to the left: on the mirrored photo it looks to the right,
    # so the averaged answer is the mean of the left and the right neighbours' answers.
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, (1, 3), padding="same", activation="sigmoid")
    conv.build((None, None, None, 3))
    kernel = np.zeros((1, 3, 3, 1), np.float32)
    kernel[0, 0, 0, 0] = 0.05  # red of the left neighbour, gently, so no output saturates
    conv.set_weights([kernel, np.array([-6.0], np.float32)])
    model = keras.Model(inputs, conv(inputs))
    height, width = 37, 50  # padded to 48x64: content must not shift when mirrored
    red = np.random.default_rng(3).integers(0, 256, (height, width)).astype(np.float32)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 0] = red
    engine = SegmentationEngine(model, keep_aspect_config(height, width, test_time_flip=True),
                                runtime="tensorflow")

    probabilities = engine.predict_probabilities(rgb)

    def sigmoid(x):
        return 1 / (1 + np.exp(-x))

    expected = (sigmoid(0.05 * red[:, :-2] - 6) + sigmoid(0.05 * red[:, 2:] - 6)) / 2  # columns 1..width-2
    np.testing.assert_allclose(probabilities[:, 1:-1], expected, rtol=1e-5, atol=1e-6)
    assert engine.test_time_flip


def test_odd_sized_photo_is_fed_at_training_scale_and_answered_at_its_own_size(mask_model):
    # 481x359 is not a multiple of anything: the mask of a large disc must come back
    # where it was, up to the blur of resizing at its edge.
    rows, columns = np.mgrid[:359, :481]
    mask = (rows - 150) ** 2 + (columns - 300) ** 2 < 90**2
    engine = SegmentationEngine(mask_model, serving_config((180, 240), "keep_aspect", STRIDE))

    predicted = threshold_probabilities(engine.predict_probabilities(image_encoding(mask)), 0.5)

    assert predicted.shape == mask.shape
    disagreeing = predicted != mask
    assert disagreeing.sum() < 0.02 * mask.sum()
    edge = (np.abs(np.sqrt((rows - 150) ** 2 + (columns - 300) ** 2) - 90) < 3)
    assert not (disagreeing & ~edge).any(), "pixels away from the disc's edge must all be right"


@pytest.mark.parametrize("photo, most_pixels, fed", [
    ((360, 480), None, (180, 240)),          # the training frames' area, as ever
    ((1440, 1920), None, (180, 240)),
    ((1440, 1920), 360 * 480, (360, 480)),   # a larger photo keeps up to most_pixels, aspect kept
    ((720, 960), 1440 * 1920, (720, 960)),   # never more than its own
    ((90, 120), 360 * 480, (180, 240)),      # a small photo is brought up to the training area, as ever
    ((1000, 3000), 360 * 480, (240, 720)),
])
def test_a_larger_photo_is_fed_with_more_pixels_up_to_the_most_given(photo, most_pixels, fed):
    assert feed_size(*photo, TINY_FEED, most_pixels) == fed
    # A fixed-size model takes its one size whatever it is given.
    assert feed_size(*photo, serving_config((180, 240), "stretch", STRIDE), most_pixels) == (180, 240)


def test_dots_too_small_at_the_training_area_are_found_with_more_pixels(mask_model):
    # 2x2-pixel dots 8 pixels apart on a 720x960 photo: fed at 180x240 each is a quarter of a pixel, too
    # faint to pass 0.5; fed at its own size, every one comes back exactly.
    dots = np.zeros((720, 960), bool)
    for row, column in ((2, 2), (2, 3), (3, 2), (3, 3)):
        dots[row::8, column::8] = True
    engine = SegmentationEngine(mask_model, TINY_FEED)
    photo = image_encoding(dots)

    assert not threshold_probabilities(engine.predict_probabilities(photo), 0.5).any()
    found = threshold_probabilities(engine.predict_probabilities(photo, most_pixels=720 * 960), 0.5)
    np.testing.assert_array_equal(found, dots)


def test_mask_area_never_grows_as_the_threshold_rises(tiny_bundle_dir, camvid_dir):
    from demo.loading import load_bundle

    bundle = load_bundle(tiny_bundle_dir)
    engine = SegmentationEngine(bundle.model, bundle.config)
    photo = load_rgb(sorted((camvid_dir / "val").glob("*.png"))[0])
    probabilities = engine.predict_probabilities(photo)

    masks = [threshold_probabilities(probabilities, threshold) for threshold in np.linspace(0, 1, 41)]

    assert masks[0].all(), "threshold 0 marks every pixel"
    for lower, higher in zip(masks, masks[1:]):
        assert not (higher & ~lower).any(), "a pixel kept at a higher threshold must be kept at a lower one"
    areas = [int(mask.sum()) for mask in masks]
    assert areas == sorted(areas, reverse=True)
    assert areas[0] > areas[-1], "an untrained model's probabilities still spread, so the area must shrink"


# --- every kind of upload, through load_rgb and the engine ---------------------------------


@pytest.mark.parametrize("make_image", [grayscale_png, transparent_rgba_png, palette_png, sixteen_bit_png,
                                        cmyk_jpeg, animated_gif])
def test_every_image_kind_decodes_to_rgb_and_segments(tmp_path, mask_model, make_image):
    path, (height, width), corner_colour = make_image(tmp_path)

    rgb = load_rgb(path)

    assert rgb.dtype == np.uint8 and rgb.shape == (height, width, 3)
    np.testing.assert_allclose(rgb[0, 0], corner_colour, atol=3)  # JPEG's rounding
    engine = SegmentationEngine(mask_model, serving_config((180, 240), "keep_aspect", STRIDE))
    probabilities = engine.predict_probabilities(rgb)
    assert probabilities.shape == (height, width)
    assert np.isfinite(probabilities).all() and probabilities.min() >= 0 and probabilities.max() <= 1


def test_exif_rotated_jpeg_is_served_upright(tmp_path, mask_model):
    stored = Image.new("RGB", (80, 40), (0, 0, 255))  # stored landscape, 80 wide
    stored.paste((255, 0, 0), (0, 0, 16, 16))  # a red square in the stored top-left corner
    exif = stored.getexif()
    exif[0x0112] = 6  # Orientation: the camera was turned, show it rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))

    rgb = load_rgb(path)

    assert rgb.shape == (80, 40, 3), "portrait, as a viewer shows it"
    np.testing.assert_allclose(rgb[4, -5], [255, 0, 0], atol=8)  # top-left turned clockwise is top-right
    np.testing.assert_allclose(rgb[4, 4], [0, 0, 255], atol=8)
    engine = SegmentationEngine(mask_model, keep_aspect_config(80, 40))
    mask = threshold_probabilities(engine.predict_probabilities(rgb), 0.5)
    assert mask.shape == (80, 40)
    assert mask[:16, -16:].all() and not mask[20:].any(), "the red square is found where it is shown"


# --- inputs that must be refused with a message a person understands ----------------------


@pytest.mark.parametrize("name, make_content, message", [
    ("empty.png", lambda camvid: b"", "empty"),
    ("notes.png", lambda camvid: b"these are my notes, not a picture\n", "not an image"),
    ("truncated.png", lambda camvid: camvid_png_bytes(camvid)[:20_000], "truncated"),
    ("truncated.jpg", lambda camvid: jpeg_bytes(Image.open(io.BytesIO(camvid_png_bytes(camvid))))[:5_000],
     "truncated"),
])
def test_unusable_files_are_refused_with_a_clear_message(tmp_path, camvid_dir, name, make_content, message):
    path = tmp_path / name
    path.write_bytes(make_content(camvid_dir))

    with pytest.raises(ImageError, match=message) as refusal:
        load_rgb(path)

    assert "Traceback" not in str(refusal.value)


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(decompression_bomb_png())
    assert path.stat().st_size < 200_000

    with pytest.raises(ImageError, match=r"30000x30000 pixels .*the limit is 50 MP"):
        load_rgb(path)


# --- overlay and statistics on hand-made cases --------------------------------------------

def test_overlay_tints_only_masked_pixels_by_opacity():
    rgb = np.array([[[100, 100, 100], [0, 50, 200]]], np.uint8)
    mask = np.array([[True, False]])
    original = rgb.copy()

    half = overlay_mask(rgb, mask, colour=(255, 0, 0), opacity=0.5)

    np.testing.assert_array_equal(half[0, 0], [178, 50, 50])  # (100 + 255) / 2 rounds to 178 (177.5)
    np.testing.assert_array_equal(half[0, 1], rgb[0, 1])
    np.testing.assert_array_equal(overlay_mask(rgb, mask, colour=(255, 0, 0), opacity=0.0), rgb)
    np.testing.assert_array_equal(overlay_mask(rgb, mask, colour=(1, 2, 3), opacity=1.0)[0, 0], [1, 2, 3])
    np.testing.assert_array_equal(rgb, original)  # the photo itself is never modified


def test_mask_stats_counts_coverage_and_separate_regions():
    mask = np.zeros((100, 100), bool)
    assert mask_stats(mask) == {"coverage_percent": 0.0, "car_regions": 0}

    mask[10:20, 10:20] = True
    mask[50:60, 70:80] = True
    assert mask_stats(mask) == {"coverage_percent": 2.0, "car_regions": 2}

    mask[20:30, 20:30] = True  # touches the first square only at a corner: the same car
    assert mask_stats(mask) == {"coverage_percent": 3.0, "car_regions": 2}

    mask[90:92, 90:92] = True  # a 4-pixel speck: coverage, but not a car
    assert mask_stats(mask) == {"coverage_percent": 3.04, "car_regions": 2}


def test_mask_stats_of_a_full_mask():
    assert mask_stats(np.ones((7, 9), bool)) == {"coverage_percent": 100.0, "car_regions": 1}


@pytest.mark.parametrize("height, width", [(1, 1), (10, 10 * MAX_ASPECT_RATIO), (10 * MAX_ASPECT_RATIO, 10)])
def test_a_single_pixel_and_long_strips_segment_at_their_own_size(tmp_path, mask_model, height, width):
    # First half (along the long side) red, which the red-channel model calls car; the rest blue.
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 2] = 255
    car = np.zeros((height, width), bool)
    if width >= height:
        car[:, :(width + 1) // 2] = True
    else:
        car[:(height + 1) // 2] = True
    rgb[car] = (255, 0, 0)
    path = tmp_path / "strip.png"
    Image.fromarray(rgb).save(path)

    engine = SegmentationEngine(mask_model, TINY_FEED)
    mask = threshold_probabilities(engine.predict_probabilities(load_rgb(path)), 0.5)

    assert mask.shape == (height, width)
    wrong = np.argwhere(mask != car)
    along = 1 if width >= height else 0
    assert np.all(np.abs(wrong[:, along] - (max(height, width) + 1) // 2) <= 3), \
        "only pixels at the red/blue border (resized and back) may differ"


def test_after_warm_up_no_photo_waits_for_the_graph_to_be_traced(tiny_bundle):
    engine = SegmentationEngine(tiny_bundle.model, tiny_bundle.config, runtime="tensorflow")
    engine.warm_up()
    assert engine._forward.graph.experimental_get_tracing_count() == 1

    for shape in [(360, 480, 3), (480, 360, 3), (1, 1, 3), (10, 10 * MAX_ASPECT_RATIO, 3)]:
        engine.predict_probabilities(np.zeros(shape, np.uint8))

    assert engine._forward.graph.experimental_get_tracing_count() == 1, "one graph for photos of every size"


def test_after_warm_up_a_street_photo_finds_litert_ready(tiny_bundle):
    """The warm-up plans LiteRT's tensors for the training frames' shape, which 4:3 photos share."""
    bundle = load_bundle(tiny_bundle.path, runtime="litert")  # its carried LiteRT graph
    engine = SegmentationEngine(bundle.model, bundle.config, runtime="litert")
    engine.warm_up()
    assert engine._forward.plans == 1

    engine.predict_probabilities(np.zeros((360, 480, 3), np.uint8))
    engine.predict_probabilities(np.zeros((720, 960, 3), np.uint8))
    assert engine._forward.plans == 1
