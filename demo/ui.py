"""The Gradio app: upload a street photo, see its cars, move the threshold.

The network runs once per photo; the decoded photo and its probabilities (at the
network's resolution) are kept for the session, so moving the threshold, opacity
or colour only re-thresholds and re-tints, which takes milliseconds. What all
sessions keep shares one byte budget (`demo.safeguards.KeptStore`).

Uploads reach `demo.imaging.load_rgb` as the very file the user sent (EXIF
rotation, 16-bit depth and all): the network events take the raw upload
(`preprocess=False`) instead of letting Gradio open and convert it first, which
would also turn a broken file into an unreadable error instead of our message.
The raw upload's path is the client's word, so `demo.safeguards.uploaded_file`
checks it is one of the app's uploads before anything opens it.
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
    scale_probabilities,
    threshold_probabilities,
)
from demo.imaging import ImageError, load_rgb
from demo.runtimes import RUNTIME_NAMES, release_freed_memory
from demo.safeguards import (
    KeptStore,
    limit_waiting_events_per_session,
    start_sweeping,
    unit_interval,
    uploaded_file,
)

logger = logging.getLogger(__name__)

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# The most one upload may weigh (pass to launch(max_file_size=...)); a 50 MP photo fits.
MAX_UPLOAD_SIZE = "30mb"
# One network pass already spreads over every core: run passes one at a time.
NETWORK_CONCURRENCY = 1
# Slider moves cost milliseconds; let a few sessions redraw at once.
REDRAW_CONCURRENCY = 4
QUEUE_SIZE = 32
# One client may not fill the queue alone (a page waits on two or three requests at most).
MAX_WAITING_PER_SESSION = 4
# A session's photo and probabilities are freed this long after its last network pass...
STATE_TIME_TO_LIVE_S = 30 * 60
# ...or sooner, least recently used first, when all sessions together keep more than this
# (about 3 bytes a pixel: 14 twelve-megapixel phone photos, or 900 street frames of 480x360).
MAX_KEPT_BYTES = 512 * 2**20
# After a photo this large, freed heap pages go back to the system (Pillow decodes in 16 MB
# blocks that glibc would otherwise keep: +430 MB after six 49 MP photos, measured).
LARGE_PHOTO_PIXELS = 4_000_000
# Uploads and pictures unused this long are deleted, checked this often; the partial file
# of an aborted upload goes after this long without a byte written.
CACHE_MAX_AGE_S = 60 * 60
CACHE_SWEEP_INTERVAL_S = 10 * 60
PARTIAL_UPLOAD_IDLE_S = 10 * 60
DEFAULT_OPACITY = 0.5
# Pictures are named by their content, as Gradio names its own, salted so a name reveals nothing.
PICTURE_NAME_SALT = secrets.token_bytes(16)


@dataclass(eq=False)  # arrays: compared by identity, never element-wise
class Segmentation:
    """What one network pass leaves for the sliders: the decoded photo and its car probabilities
    at the network's resolution (`scale_probabilities` brings them to the photo's size)."""

    rgb: np.ndarray
    probabilities: np.ndarray

    @property
    def nbytes(self) -> int:
        return self.rgb.nbytes + self.probabilities.nbytes


def hex_colour(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def parse_colour(text: str | None) -> tuple[int, int, int]:
    """The colour picker's value ("#rrggbb", which its front end always sends) as an RGB triple."""
    if isinstance(text, str) and re.fullmatch(r"#[0-9a-fA-F]{6}", text.strip()):
        return tuple(int(text.strip()[i:i + 2], 16) for i in (1, 3, 5))
    return DEFAULT_OVERLAY_COLOUR


def read_upload(upload: dict | None) -> np.ndarray:
    """The uploaded file (Gradio's raw FileData) as RGB, or a gr.Error the user can act on."""
    if upload is None:
        raise gr.Error("Please upload a photo first.", print_exception=False)
    try:
        return load_rgb(uploaded_file(upload))
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
    probabilities = scale_probabilities(segmentation.probabilities, segmentation.rgb.shape[:2])
    mask = threshold_probabilities(probabilities, float(threshold))
    overlay = overlay_mask(segmentation.rgb, mask, colour=colour, opacity=float(opacity))
    return (save_picture(overlay, "overlay.jpeg"), save_picture(mask_to_png_array(mask), "car_mask.png"),
            mask_stats(mask))


def build_demo(bundle: Bundle) -> gr.Blocks:
    """The whole app for one loaded bundle, queued; launch it with max_file_size=MAX_UPLOAD_SIZE."""
    engine = SegmentationEngine(bundle.model, bundle.config)
    engine.warm_up()  # at start, not on the first user's request
    logger.info("Serving %s with %s.", bundle.source, RUNTIME_NAMES[engine.runtime])

    kept = KeptStore(MAX_KEPT_BYTES)

    def segment_photo(upload: dict | None) -> Segmentation:
        rgb = read_upload(upload)
        return Segmentation(rgb, engine.network_probabilities(rgb))

    def after_photo(segmentation: Segmentation) -> None:
        """Once a large photo's working memory is freed (what is kept stays), return it to the system."""
        if segmentation.rgb.shape[0] * segmentation.rgb.shape[1] > LARGE_PHOTO_PIXELS:
            release_freed_memory()

    def run_network(upload: dict | None, kept_key: str | None) -> str | None:
        """Segment the photo and keep the result for the sliders; the session holds only its key."""
        kept.discard(kept_key)  # this session's previous photo
        if upload is None:  # the input was cleared
            return None
        segmentation = segment_photo(upload)
        key = kept.put(segmentation, segmentation.nbytes)
        after_photo(segmentation)
        return key

    def redraw(kept_key: str | None, threshold, opacity, colour):
        # Raw values (preprocess=False), so that a bad one gets a message instead of a bare "Error".
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if kept_key is None:
            return None, None, ""
        segmentation = kept.get(kept_key)
        if segmentation is None:
            raise gr.Error("The server made room for other photos; press Find the cars to run this one again.",
                           print_exception=False)
        overlay_path, mask_path, stats = render(segmentation, threshold, opacity, parse_colour(colour))
        after_photo(segmentation)
        return overlay_path, mask_path, describe_coverage(stats, threshold)

    def segment(image: dict, threshold: float):
        """Find the cars in a photo.

        Returns the photo with car pixels tinted red (JPEG), the binary car mask
        (PNG: car 255, background 0) and {"coverage_percent", "car_regions"}.
        """
        threshold = unit_interval(threshold, "threshold")
        segmentation = segment_photo(image)
        pictures = render(segmentation, threshold, DEFAULT_OPACITY, DEFAULT_OVERLAY_COLOUR)
        after_photo(segmentation)
        return pictures

    # No delete_cache: start_sweeping below cleans the upload folder instead.
    with gr.Blocks(title="Car segmentation") as demo:
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

        segmentation_state = gr.State(time_to_live=STATE_TIME_TO_LIVE_S, delete_callback=kept.discard)
        slider_inputs = [segmentation_state, threshold_slider, opacity_slider, colour_picker]
        picture_outputs = [overlay_output, mask_output, coverage_text]

        # The network writes only the state; the picture is then drawn from the sliders'
        # values at that moment, so it always matches them, even if one moved mid-pass.
        # Private events are only left out of the API page: anyone can still call them, so they
        # check their inputs as /segment does.
        gr.on(
            [image_input.change, run_button.click], run_network, inputs=[image_input, segmentation_state],
            outputs=[segmentation_state], preprocess=False, concurrency_id="network", trigger_mode="once",
            show_progress_on=[overlay_output], api_visibility="private",
        ).success(
            redraw, slider_inputs, picture_outputs, preprocess=False, concurrency_id="redraw",
            concurrency_limit=REDRAW_CONCURRENCY, show_progress="hidden", api_visibility="private",
        )

        gr.on(
            [threshold_slider.change, opacity_slider.change, colour_picker.change], redraw,
            inputs=slider_inputs, outputs=picture_outputs, preprocess=False, trigger_mode="always_last",
            concurrency_id="redraw", concurrency_limit=REDRAW_CONCURRENCY, show_progress="hidden",
            api_visibility="private",
        )

        # API only (no trigger in the page): (image, threshold) -> (overlay, mask, stats).
        stats_output = gr.JSON(visible=False, label="Car coverage")
        gr.on(
            [], segment, inputs=[image_input, threshold_slider],
            outputs=[overlay_output, mask_output, stats_output], preprocess=False,
            concurrency_id="network", api_name="segment",
        )

    demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=QUEUE_SIZE)
    limit_waiting_events_per_session(demo, MAX_WAITING_PER_SESSION)
    start_sweeping(demo, CACHE_SWEEP_INTERVAL_S, CACHE_MAX_AGE_S, PARTIAL_UPLOAD_IDLE_S)
    return demo
