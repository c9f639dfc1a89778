"""What the page's events do (`PageHandlers`), and the drawing they share.

How a photo flows through them: demo/ui.py's docstring; `demo.ui.wire_events` connects them to the page.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder

from demo.bundle import Bundle
from demo.bundle_files import atomic_write
from demo.engine import (
    PHOTO_FEED_PIXELS,
    SegmentationEngine,
    mask_stats,
    mask_to_png_array,
    overlay_mask,
    scale_probabilities,
    threshold_probabilities,
    timed,
)
from demo.examples import EXAMPLES, EXAMPLES_DIR, example_label
from demo.imaging import ImageError, load_rgb
from demo.model_facts import CAR, class_slug, class_words, plural, regions_key_for
from demo.runtimes import release_freed_memory
from demo.safeguards import KeptStore, unit_interval, uploaded_file

logger = logging.getLogger(__name__)
# After a photo this large, freed heap pages go back to the system (Pillow decodes in 16 MB
# blocks that glibc would otherwise keep: the process grew by hundreds of MB over a few 49 MP photos).
LARGE_PHOTO_PIXELS = 4_000_000
# Magenta is rare in streets, and what is found is also outlined in it (solid), so it shows
# whatever its own colour: a red tint vanished on red cars and buses. (The name is the car app's.)
CAR_COLOUR = (255, 0, 255)
DEFAULT_OPACITY = 0.4
# Pictures are named by their content, as Gradio names its own, salted so a name reveals nothing.
PICTURE_NAME_SALT = secrets.token_bytes(16)


def no_photo_text(plural_words: str) -> str:
    """The result line before any photo: "Upload a photo, or pick an example below, to see its cars."""
    return f"Upload a photo, or pick an example below, to see its {plural_words}."


NO_PHOTO = no_photo_text(plural(CAR))  # a car bundle's
# The result line says how many pixels a slider move of this size either way would flip: how settled
# the answer is where the user stands (a fixed band such as 0.25-0.75 misses a default near 0.85).
SLIDER_REACH = 0.10


@dataclass(eq=False)  # arrays: compared by identity, never element-wise
class Segmentation:
    """What one network pass leaves for the sliders: the decoded photo and its class probabilities
    at the network's resolution (`scale_probabilities` brings them to the photo's size)."""

    rgb: np.ndarray
    probabilities: np.ndarray
    network_seconds: float
    caption: str = ""  # what the photo is, for an example
    photo_picture: str | None = None  # the photo as shown (see `shown_photo`), once written

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + self.probabilities.nbytes


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def parse_colour(text: str | None) -> tuple[int, int, int]:
    """The colour picker's value ("#rrggbb", which its front end always sends) as an RGB triple."""
    if isinstance(text, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", text.strip()):
        return tuple(int(text.strip()[i:i + 2], 16) for i in (1, 3, 5))
    return CAR_COLOUR


def read_upload(upload: dict | None) -> np.ndarray:
    """The uploaded file (Gradio's raw FileData) as RGB, or a gr.Error the user can act on."""
    if upload is None:
        raise gr.Error("Please upload a photo first.", print_exception=False)
    try:
        return load_rgb(uploaded_file(upload))
    except ImageError as error:
        logger.info("Refused an upload: %s", error)
        raise gr.Error(str(error), print_exception=False) from error


def threshold_reach(threshold: float) -> tuple[float, float]:
    """The thresholds within SLIDER_REACH of `threshold`, clipped to the slider's 0-1."""
    return max(0.0, threshold - SLIDER_REACH), min(1.0, threshold + SLIDER_REACH)


def describe_result(segmentation: Segmentation, stats: dict, threshold: float, from_memory: bool,
                    singular: str = CAR) -> str:
    """The line under the result: what was found at this threshold, the share of pixels a nearby
    threshold would flip (how settled the answer is here), and the network's time. `singular`: the class
    (`demo.model_facts.class_words`), whose `stats` are `mask_stats`'s with `regions_key_for` it."""
    regions = stats[regions_key_for(singular)]
    low, high = threshold_reach(threshold)
    probabilities = segmentation.probabilities  # at the network's resolution: about the same shares, cheaper
    # A pixel is the class when its probability >= the threshold: thresholds in [low, high] disagree on [low, high) only.
    flippable = 100 * np.count_nonzero((probabilities >= low) & (probabilities < high)) / probabilities.size
    timing = f"The network took {1000 * segmentation.network_seconds:.0f} ms"
    timing += " when this example was first shown." if from_memory else "."
    caption = f"{segmentation.caption}. " if segmentation.caption else ""
    return (
        f"{caption}At threshold {threshold:.2f}, **{stats['coverage_percent']:.2f}%** of the pixels are {singular}, "
        f"in **{regions}** separate {'region' if regions == 1 else 'regions'}. Thresholds from {low:.2f} to "
        f"{high:.2f} change {flippable:.1f}% of the pixels. {timing}"
    )


# OpenCV encodes a 12 MP photo's pictures faster than Pillow did (1.7x the JPEG, 2.7x the PNG: `python -m
# bench.request_profile --size 4000x3000`), at Pillow's default JPEG quality (75, colour at half resolution).
PICTURE_ENCODINGS = {".jpeg": [cv2.IMWRITE_JPEG_QUALITY, 75], ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 75], ".png": []}


def encode_picture(pixels: np.ndarray, suffix: str) -> bytes:
    """RGB or grey `pixels` as the bytes of a file of this suffix (".jpeg", ".png", or another OpenCV
    writes, with its defaults)."""
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)  # OpenCV's channel order
    return cv2.imencode(suffix, pixels, PICTURE_ENCODINGS.get(suffix, []))[1].tobytes()


def save_picture(pixels: np.ndarray, file_name: str) -> str:
    """`pixels` encoded as `file_name` (its suffix names the format) in Gradio's cache; the file's path.

    Handed an array, Gradio 6.31 rewrites the picture's file in place on every request
    (processing_utils.save_pil_to_cache), so when two requests draw the same picture a client
    still downloading it receives a truncated file. Here each picture is written once, whole,
    under a temporary name and then renamed into place; delete_cache ages it out like Gradio's own.
    """
    data = encode_picture(pixels, Path(file_name).suffix)
    folder = Path(get_upload_folder()) / hashlib.sha256(PICTURE_NAME_SALT + data).hexdigest()
    path = folder / file_name
    try:
        os.utime(path)  # handed out again: its age for delete_cache starts over
        return str(path)
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda staging: staging.write_bytes(data))
    return str(path)


def shown_photo(segmentation: Segmentation) -> str:
    """The decoded photo (orientation applied) as a JPEG for the before/after view: written once
    per photo, not on every slider move, and written again should the sweep have aged it out."""
    if segmentation.photo_picture is not None:
        try:
            os.utime(segmentation.photo_picture)  # shown again: the sweep's hour starts over
            return segmentation.photo_picture
        except FileNotFoundError:
            pass
    segmentation.photo_picture = save_picture(segmentation.rgb, "photo.jpeg")
    return segmentation.photo_picture


def draw_cars(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], opacity: float) -> np.ndarray:
    """The photo with the mask's pixels (the class found) tinted `colour` at `opacity` and outlined in it at
    full strength, so that a thing of the tint's own colour still shows (and at opacity 0, the outline alone)."""
    drawn = overlay_mask(rgb, mask, colour=colour, opacity=opacity)
    width = max(1, round(max(mask.shape) / 240))  # 2 px on a 480x360 frame, in proportion on larger photos
    inside = cv2.erode(mask.view(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8)).view(bool)
    drawn[mask & ~inside] = colour
    return drawn


def render(segmentation: Segmentation, threshold: float, opacity: float, colour: tuple[int, int, int],
           words: tuple[str, str]):
    """The drawn class (JPEG file), downloadable mask (PNG file) and coverage stats for one threshold: no
    network. `words`: the class's (`class_words`), which name the files ("cars.jpeg", "car_mask.png")."""
    singular, plural_words = words
    probabilities = scale_probabilities(segmentation.probabilities, segmentation.rgb.shape[:2])
    mask = threshold_probabilities(probabilities, float(threshold))
    drawn = draw_cars(segmentation.rgb, mask, colour, float(opacity))
    return (save_picture(drawn, f"{class_slug(plural_words)}.jpeg"),
            save_picture(mask_to_png_array(mask), f"{class_slug(singular)}_mask.png"),
            mask_stats(mask, regions_key_for(singular)))


def after_photo(segmentation: Segmentation) -> None:
    """Once a large photo's working memory is freed (what is kept stays), return it to the system."""
    if segmentation.rgb.shape[0] * segmentation.rgb.shape[1] > LARGE_PHOTO_PIXELS:
        release_freed_memory()


class PageHandlers:
    """The page's events, for one engine: each method takes the event's inputs and returns its outputs.

    A session's state is the key of its segmentation: "example-N" for an example (kept here, for every
    session), else the key `kept` gave its upload's. Raw values arrive unchecked (preprocess=False), so
    each method checks its own.
    """

    def __init__(self, engine: SegmentationEngine, bundle: Bundle, kept: KeptStore):
        self.engine, self.bundle, self.kept = engine, bundle, kept
        self.words = class_words(bundle.config)
        self.no_photo = no_photo_text(self.words[1])
        self.example_keys = {f"example-{index}": example for index, example in enumerate(EXAMPLES)}
        self.example_results: dict[str, Segmentation] = {}
        self.example_lock = threading.Lock()

    def segment_rgb(self, rgb: np.ndarray, caption: str = "") -> Segmentation:
        probabilities, seconds = timed(lambda: self.engine.network_probabilities(rgb, PHOTO_FEED_PIXELS))
        return Segmentation(rgb, probabilities, seconds, caption)

    def example_result(self, key: str) -> Segmentation:
        with self.example_lock:  # two first clicks on one example run the network once
            if key not in self.example_results:
                example = self.example_keys[key]
                rgb = load_rgb(EXAMPLES_DIR / example.file)
                self.example_results[key] = self.segment_rgb(rgb, f"Example: {example_label(example, self.bundle)}")
            return self.example_results[key]

    def kept_result(self, key: str | None) -> Segmentation | None:
        """The session's photo and probabilities: an example's, or its own upload's if still kept."""
        if key in self.example_keys:
            return self.example_result(key)
        return self.kept.get(key)

    def draw(self, segmentation: Segmentation, threshold: float, opacity: float, colour, from_memory: bool):
        """(before/after pair, mask file, result line) for these slider values."""
        drawn_path, mask_path, stats = render(segmentation, threshold, opacity, parse_colour(colour), self.words)
        after_photo(segmentation)
        return ((shown_photo(segmentation), drawn_path), mask_path,
                describe_result(segmentation, stats, threshold, from_memory, self.words[0]))

    def opening(self, threshold: float):
        """The page as it opens: (state, before/after pair, mask file, result line) for the first example."""
        key = next(iter(self.example_keys))
        return key, *self.draw(self.example_result(key), threshold, DEFAULT_OPACITY, hex_colour(CAR_COLOUR),
                               from_memory=True)

    def run_network(self, upload: dict | None, kept_key: str | None):
        """Segment the new photo and keep the result for the sliders (the session holds only its key);
        the photo box is emptied for the next one, since the result shows the photo."""
        segmentation = self.segment_rgb(read_upload(upload))
        # The previous photo goes only now: a slider moved during the pass still finds it. (If the
        # file is refused, forget_photo lets it go.)
        self.kept.discard(kept_key)
        key = self.kept.put(segmentation, segmentation.nbytes)
        after_photo(segmentation)
        return key, None

    def forget_photo(self, kept_key: str | None):
        """After a refused file: nothing of the previous photo stays on the page or in memory."""
        self.kept.discard(kept_key)
        return None, None, None, self.no_photo, None

    def redraw(self, kept_key: str | None, threshold, opacity, colour):
        # Raw values (preprocess=False), so that a bad one gets a message instead of a bare "Error".
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if kept_key is None:
            return None, None, self.no_photo
        segmentation = self.kept_result(kept_key)
        if segmentation is None:
            raise gr.Error("The server made room for other photos; please upload this one again.",
                           print_exception=False)
        return self.draw(segmentation, threshold, opacity, colour, from_memory=kept_key in self.example_keys)

    def show_example(self, index, kept_key: str | None, threshold, opacity, colour):
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(EXAMPLES)):
            raise gr.Error("There is no such example.", print_exception=False)
        self.kept.discard(kept_key)
        key = f"example-{index}"
        return key, *self.draw(self.example_result(key), threshold, opacity, colour, from_memory=True)

    def segment_description(self) -> str:
        """What /segment does, for the API page, in the bundle's class (`segment`)."""
        singular, plural_words = self.words
        return (f"Find the {plural_words} in a photo. Returns the photo with {singular} pixels tinted and outlined "
                f"in magenta (JPEG), the binary {singular} mask (PNG: {singular} 255, background 0) and "
                f'{{"coverage_percent", "{regions_key_for(singular)}"}}.')

    def segment(self, image: dict, threshold: float):
        """The API's /segment: the photo with the class's pixels drawn (JPEG), the binary mask (PNG) and
        {"coverage_percent", regions key}, as `segment_description` tells clients."""
        threshold = unit_interval(threshold, "threshold")
        segmentation = self.segment_rgb(read_upload(image))
        pictures = render(segmentation, threshold, DEFAULT_OPACITY, CAR_COLOUR, self.words)
        after_photo(segmentation)
        return pictures
