"""The Gradio app: upload a street photo, see its cars, move the threshold.

The network runs once per photo; its probabilities and the decoded photo stay in
the session (`gr.State`), so moving the threshold, opacity or colour only
re-thresholds and re-tints, which takes milliseconds.

Uploads reach `demo.imaging.load_rgb` as the very file the user sent (EXIF
rotation, 16-bit depth and all): the network events take the raw upload
(`preprocess=False`) instead of letting Gradio open and convert it first, which
would also turn a broken file into an unreadable error instead of our message.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from demo.bundle import Bundle
from demo.engine import (
    DEFAULT_OVERLAY_COLOUR,
    SegmentationEngine,
    mask_stats,
    mask_to_png_array,
    overlay_mask,
    threshold_probabilities,
)
from demo.imaging import ImageError, load_rgb
from demo.runtimes import RUNTIME_NAMES

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# The most one upload may weigh (pass to launch(max_file_size=...)); a 50 MP photo fits.
MAX_UPLOAD_SIZE = "30mb"
# One network pass already spreads over every core: run passes one at a time.
NETWORK_CONCURRENCY = 1
# Slider moves cost milliseconds; let a few sessions redraw at once.
REDRAW_CONCURRENCY = 4
QUEUE_SIZE = 32
# A session's photo and probabilities are freed this long after its last network pass.
STATE_TIME_TO_LIVE_S = 30 * 60
DEFAULT_OPACITY = 0.5
# Pictures are named by their content, as Gradio names its own, salted so a name reveals nothing.
PICTURE_NAME_SALT = secrets.token_bytes(16)


@dataclass(eq=False)  # arrays: compared by identity, never element-wise
class Segmentation:
    """What one network pass leaves for the sliders: the decoded photo and its car probabilities."""

    rgb: np.ndarray
    probabilities: np.ndarray


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def parse_colour(text: str | None) -> tuple[int, int, int]:
    """The colour picker's value ("#rrggbb", which its front end always sends) as an RGB triple."""
    if text and re.fullmatch(r"#[0-9a-fA-F]{6}", text.strip()):
        return tuple(int(text.strip()[i:i + 2], 16) for i in (1, 3, 5))
    return DEFAULT_OVERLAY_COLOUR


def read_upload(upload: dict | None) -> np.ndarray:
    """The uploaded file (Gradio's raw FileData) as RGB, or a gr.Error the user can act on."""
    if upload is None or not upload.get("path"):
        raise gr.Error("Please upload a photo first.")
    try:
        return load_rgb(upload["path"])
    except ImageError as error:
        logger.info("Refused an upload: %s", error)
        raise gr.Error(str(error), print_exception=False) from error


def describe_model(bundle: Bundle, runtime: str | None = None) -> str:
    """One line saying which model is served, how well it did on validation, and what runs it."""
    served = f"Model: **{bundle.config.get('architecture', 'unknown architecture')}** from {bundle.source}"
    if bundle.revision:
        served += f", revision `{bundle.revision[:12]}`"
    iou = bundle.val_iou
    quality = f"car IoU {iou:.3f} on CamVid validation" if iou is not None else "no validation IoU recorded"
    if bundle.config.get("test_time_flip"):
        quality += " (photo and its mirror image averaged)"
    line = f"{served} · {quality}"
    return f"{line} · runs on {RUNTIME_NAMES.get(runtime, runtime)}" if runtime else line


def describe_coverage(stats: dict, threshold: float) -> str:
    regions = stats["car_regions"]
    return (
        f"At threshold {threshold:.2f}, **{stats['coverage_percent']:.2f}%** of the pixels are car, "
        f"in **{regions}** separate {'region' if regions == 1 else 'regions'}."
    )


def save_picture(pixels: np.ndarray, file_name: str) -> str:
    """`pixels` encoded as `file_name` (its suffix names the format) in Gradio's cache; the file's path.

    Handed an array, Gradio 6.31 rewrites the picture's file in place on every request
    (processing_utils.save_pil_to_cache), so when two requests draw the same picture a client
    still downloading it receives a truncated file. Here each picture is written once, whole,
    under a temporary name and then renamed into place; delete_cache ages it out like Gradio's own.
    """
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, Image.registered_extensions()[Path(file_name).suffix])
    data = buffer.getvalue()
    folder = Path(get_upload_folder()) / hashlib.sha256(PICTURE_NAME_SALT + data).hexdigest()
    path = folder / file_name
    try:
        os.utime(path)  # handed out again: its age for delete_cache starts over
        return str(path)
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    descriptor, staging = tempfile.mkstemp(dir=folder, prefix=f".{file_name}.")
    try:
        with os.fdopen(descriptor, "wb") as staging_file:
            staging_file.write(data)
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    return str(path)


def render(segmentation: Segmentation, threshold: float, opacity: float, colour: tuple[int, int, int]):
    """Overlay (JPEG file), downloadable mask (PNG file) and coverage stats for one threshold: no network."""
    mask = threshold_probabilities(segmentation.probabilities, float(threshold))
    overlay = overlay_mask(segmentation.rgb, mask, colour=colour, opacity=float(opacity))
    return (save_picture(overlay, "overlay.jpeg"), save_picture(mask_to_png_array(mask), "car_mask.png"),
            mask_stats(mask))


def build_demo(bundle: Bundle) -> gr.Blocks:
    """The whole app for one loaded bundle, queued; launch it with max_file_size=MAX_UPLOAD_SIZE."""
    engine = SegmentationEngine(bundle.model, bundle.config)
    engine.warm_up()  # at start, not on the first user's request
    logger.info("Serving %s with %s.", bundle.source, RUNTIME_NAMES[engine.runtime])

    def run_network(upload: dict | None) -> Segmentation | None:
        if upload is None:  # the input was cleared
            return None
        rgb = read_upload(upload)
        return Segmentation(rgb, engine.predict_probabilities(rgb))

    def redraw(segmentation: Segmentation | None, threshold: float, opacity: float, colour: str):
        if segmentation is None:
            return None, None, ""
        overlay_path, mask_path, stats = render(segmentation, threshold, opacity, parse_colour(colour))
        return overlay_path, mask_path, describe_coverage(stats, float(threshold))

    def segment(image: dict, threshold: float):
        """Find the cars in a photo.

        Returns the photo with car pixels tinted red (JPEG), the binary car mask
        (PNG: car 255, background 0) and {"coverage_percent", "car_regions"}.
        """
        rgb = read_upload(image)
        segmentation = Segmentation(rgb, engine.predict_probabilities(rgb))
        return render(segmentation, threshold, DEFAULT_OPACITY, DEFAULT_OVERLAY_COLOUR)

    with gr.Blocks(title="Car segmentation", delete_cache=(3600, 3600)) as demo:
        gr.Markdown(
            "# Find the cars\n"
            "Upload a street photo (or paste one, or take one with your webcam): a U-Net trained on "
            "CamVid marks every car pixel, and the threshold trades missed cars for false alarms."
        )
        gr.Markdown(describe_model(bundle, engine.runtime))
        if bundle.notice:
            gr.Markdown(f"> ⚠️ **Warning:** {bundle.notice}", elem_id="model-notice")

        with gr.Row():
            with gr.Column():
                # The events below take the raw upload (preprocess=False); "filepath" is also
                # what the API page tells clients to send.
                image_input = gr.Image(
                    label="Street photo", type="filepath", image_mode=None,
                    sources=["upload", "clipboard", "webcam"], elem_id="photo",
                )
                run_button = gr.Button("Find the cars", variant="primary", elem_id="run")
                threshold_slider = gr.Slider(
                    0.0, 1.0, value=engine.default_threshold, step=0.01, label="Threshold",
                    info="A pixel is car when its probability reaches this. The default is the best on validation.",
                    elem_id="threshold",
                )
                opacity_slider = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Overlay opacity",
                                           elem_id="opacity")
                colour_picker = gr.ColorPicker(hex_colour(DEFAULT_OVERLAY_COLOUR), label="Overlay colour")
            with gr.Column():
                overlay_output = gr.Image(label="Cars", interactive=False, elem_id="overlay")
                coverage_text = gr.Markdown(elem_id="coverage")
                mask_output = gr.Image(label="Car mask", interactive=False, buttons=["download", "fullscreen"],
                                       elem_id="mask")

        gr.Examples(
            examples=[[str(path)] for path in sorted(EXAMPLES_DIR.glob("*.png"))],
            inputs=[image_input],
            label="CamVid validation frames",
        )

        segmentation_state = gr.State(time_to_live=STATE_TIME_TO_LIVE_S)
        slider_inputs = [segmentation_state, threshold_slider, opacity_slider, colour_picker]
        picture_outputs = [overlay_output, mask_output, coverage_text]

        # The network writes only the state; the picture is then drawn from the sliders'
        # values at that moment, so it always matches them, even if one moved mid-pass.
        gr.on(
            [image_input.change, run_button.click], run_network, inputs=[image_input],
            outputs=[segmentation_state], preprocess=False, concurrency_id="network", trigger_mode="once",
            show_progress_on=[overlay_output], api_visibility="private",
        ).success(
            redraw, slider_inputs, picture_outputs, concurrency_id="redraw", concurrency_limit=REDRAW_CONCURRENCY,
            show_progress="hidden", api_visibility="private",
        )

        gr.on(
            [threshold_slider.change, opacity_slider.change, colour_picker.change], redraw,
            inputs=slider_inputs, outputs=picture_outputs, trigger_mode="always_last", concurrency_id="redraw",
            concurrency_limit=REDRAW_CONCURRENCY, show_progress="hidden", api_visibility="private",
        )

        # API only (no trigger in the page): (image, threshold) -> (overlay, mask, stats).
        stats_output = gr.JSON(visible=False, label="Car coverage")
        gr.on(
            [], segment, inputs=[image_input, threshold_slider],
            outputs=[overlay_output, mask_output, stats_output], preprocess=False,
            concurrency_id="network", api_name="segment",
        )

    return demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=QUEUE_SIZE)
