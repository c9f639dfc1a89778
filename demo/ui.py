"""The Gradio app: upload a street photo, see its cars, move the threshold.

The network runs once per new photo (upload, paste or webcam: the Image's `upload` event,
which fires once each time, where `change` fires twice when a photo replaces another and
also for values the app sets itself). The decoded photo and its probabilities (at the
network's resolution) are kept for the session, so moving the threshold, opacity or colour
only re-thresholds and redraws, which takes milliseconds. What all sessions keep shares one
byte budget (`demo.safeguards.KeptStore`); the examples' results are computed once, when
first shown, and kept for every session.

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
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import gradio as gr
import numpy as np
from gradio.utils import get_upload_folder
from PIL import Image

from demo.bundle import Bundle, atomic_write, onnx_graph_weights
from demo.engine import (
    SegmentationEngine,
    mask_stats,
    mask_to_png_array,
    overlay_mask,
    scale_probabilities,
    threshold_probabilities,
    timed,
)
from demo.imaging import ImageError, load_rgb
from demo.model_facts import (
    HELD_OUT_RECIPE,
    dataset_in_words,
    held_out_scores,
    runs_in_words,
    runtime_in_words,
    threshold_chosen_on,
    threshold_in_words,
    validation_drives_unseen,
    validation_frames_in_words,
    what_it_is,
)
from demo.runtimes import describe_runtime, release_freed_memory
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
# Magenta is rare in streets, and the cars are also outlined in it (solid), so they show
# whatever their own colour: a red tint vanished on red cars and buses.
CAR_COLOUR = (255, 0, 255)
DEFAULT_OPACITY = 0.4
# The before/after view's tallest; a 4:3 photo then fits a 1366x900 screen with the controls.
RESULT_MAX_HEIGHT = 460
# Pictures are named by their content, as Gradio names its own, salted so a name reveals nothing.
PICTURE_NAME_SALT = secrets.token_bytes(16)
NO_PHOTO = "Upload a photo, or pick an example below, to see its cars."
# The result line says how many pixels a slider move of this size either way would flip: how settled
# the answer is where the user stands (a fixed band such as 0.25-0.75 misses a default near 0.85).
SLIDER_REACH = 0.10
# After a new result, bring it into view when it is not (on a phone it starts below the fold).
SHOW_RESULT_JS = """() => {
  const panel = document.getElementById("result-panel");
  const box = panel && panel.getBoundingClientRect();
  if (box && (box.top < 0 || box.bottom > window.innerHeight)) panel.scrollIntoView({behavior: "smooth", block: "start"});
}"""


@dataclass(frozen=True)
class Example:
    file: str  # in EXAMPLES_DIR
    scene: str
    split: str  # the CamVid split the frame comes from

    @property
    def drive(self) -> str:
        return self.file.split("_")[0]


# CamVid frames with several clearly visible cars, from three drives; the first is shown when the
# page opens. (0016E5_08017.png, also in the folder, is the benchmarks' photo, not an example.)
EXAMPLES = [
    Example("0006R0_f02610.png", "Supermarket car park", "train"),
    Example("0001TP_008010.png", "Shopping street", "train"),
    Example("0016E5_04410.png", "Red bus among cars", "train"),
    Example("0016E5_07967.png", "Parked Mini", "val"),
]


@dataclass(eq=False)  # arrays: compared by identity, never element-wise
class Segmentation:
    """What one network pass leaves for the sliders: the decoded photo and its car probabilities
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


def example_label(example: Example, bundle: Bundle) -> str:
    """The example's scene and whether the served model was trained on it, as far as its bundle says
    (the drives its training split held; `held_out_drives` describe the recipe's other runs, not this model)."""
    train_drives = bundle.config.dataset.train_drives
    if train_drives is not None and example.drive not in train_drives:
        seen = "new to this model"
    elif example.split == "val":
        seen = "validation, not trained on"
    else:
        seen = "trained on"
    return f"{example.scene} (drive {example.drive}: {seen})"


def describe_model(bundle: Bundle, runtime: str | None = None) -> str:
    """The "About the model" text: what the model is, what it learnt from, how well it does on frames
    it was not trained on (the drives held out of training as well, when the bundle has them), what runs it."""
    config = bundle.config
    what = f"**What it is.** {what_it_is(config)}"
    data = f"**What it learnt from.** {dataset_in_words(config)}. {threshold_in_words(config)}"
    val = config.metrics.get("val", {})
    scores = [f"- validation frames: **{val['iou']:.2f}**" + (f" ({val['images']} frames)" if val.get("images") else "")
              if val.get("iou") is not None else "- validation frames: not measured"]
    held_out = held_out_scores(config)
    for drive, score in held_out:
        runs = runs_in_words(score.get("runs", 1))
        scores.append(f"- drive {drive}, {HELD_OUT_RECIPE}: **{score['iou']:.2f}**"
                      + (f" ({score['images']} frames)" if score.get("images") else "") + (f", {runs}" if runs else ""))
    if validation_drives_unseen(config):
        scores.append(f"- {validation_frames_in_words(config)}.")
    elif not held_out:
        scores.append(f"- no drive held out of training was measured; {validation_frames_in_words(config)}.")
    quality = ("**How well it does**, scored by overlap (IoU: of the pixels that the model or people marked as "
               "car, the share both did; 1 is perfect) on frames it was not trained on:\n" + "\n".join(scores))
    served = f"**Which model.** Served from: {bundle.source}"
    if bundle.revision:
        served += f", revision `{bundle.revision[:12]}`"
    if config.model_sha256:  # names the very weights, wherever they came from
        served += f"; model file SHA-256 `{config.model_sha256[:12]}`"
    paragraphs = [what, data, quality]
    if runtime:
        paragraphs.append(f"**What runs it.** {runtime_in_words(config, runtime)}, "
                          f"on this server's CPU (`MODEL_RUNTIME={runtime}`).")
    return "\n\n".join([*paragraphs, served + "."])


def threshold_reach(threshold: float) -> tuple[float, float]:
    """The thresholds within SLIDER_REACH of `threshold`, clipped to the slider's 0-1."""
    return max(0.0, threshold - SLIDER_REACH), min(1.0, threshold + SLIDER_REACH)


def describe_result(segmentation: Segmentation, stats: dict, threshold: float, from_memory: bool) -> str:
    """The line under the result: what was found at this threshold, the share of pixels a nearby
    threshold would flip (how settled the answer is here), and the network's time."""
    regions = stats["car_regions"]
    low, high = threshold_reach(threshold)
    probabilities = segmentation.probabilities  # at the network's resolution: about the same shares, cheaper
    # A pixel is car when its probability >= the threshold: thresholds in [low, high] disagree on [low, high) only.
    flippable = 100 * np.count_nonzero((probabilities >= low) & (probabilities < high)) / probabilities.size
    timing = f"The network took {1000 * segmentation.network_seconds:.0f} ms"
    timing += " when this example was first shown." if from_memory else "."
    caption = f"{segmentation.caption}. " if segmentation.caption else ""
    return (
        f"{caption}At threshold {threshold:.2f}, **{stats['coverage_percent']:.2f}%** of the pixels are car, "
        f"in **{regions}** separate {'region' if regions == 1 else 'regions'}. Thresholds from {low:.2f} to "
        f"{high:.2f} change {flippable:.1f}% of the pixels. {timing}"
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
    """The photo with car pixels tinted `colour` at `opacity` and outlined in it at full strength,
    so that a car of the tint's own colour still shows (and at opacity 0, the outline alone)."""
    drawn = overlay_mask(rgb, mask, colour=colour, opacity=opacity)
    width = max(1, round(max(mask.shape) / 240))  # 2 px on a 480x360 frame, in proportion on larger photos
    inside = cv2.erode(mask.view(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8)).view(bool)
    drawn[mask & ~inside] = colour
    return drawn


def render(segmentation: Segmentation, threshold: float, opacity: float, colour: tuple[int, int, int]):
    """Drawn cars (JPEG file), downloadable mask (PNG file) and coverage stats for one threshold: no network."""
    probabilities = scale_probabilities(segmentation.probabilities, segmentation.rgb.shape[:2])
    mask = threshold_probabilities(probabilities, float(threshold))
    drawn = draw_cars(segmentation.rgb, mask, colour, float(opacity))
    return (save_picture(drawn, "cars.jpeg"), save_picture(mask_to_png_array(mask), "car_mask.png"),
            mask_stats(mask))


def build_demo(bundle: Bundle) -> gr.Blocks:
    """The whole app for one loaded bundle, queued; launch it with max_file_size=MAX_UPLOAD_SIZE."""
    engine = SegmentationEngine(bundle.model, bundle.config)
    engine.warm_up()  # at start, not on the first user's request
    logger.info("Serving %s with %s.", bundle.source,
                describe_runtime(engine.runtime, onnx_graph_weights(bundle.config)))

    kept = KeptStore(MAX_KEPT_BYTES)
    # The examples' results, for every session: computed when an example is first shown.
    example_keys = {f"example-{index}": example for index, example in enumerate(EXAMPLES)}
    example_results: dict[str, Segmentation] = {}
    example_lock = threading.Lock()

    def segment_rgb(rgb: np.ndarray, caption: str = "") -> Segmentation:
        probabilities, seconds = timed(lambda: engine.network_probabilities(rgb))
        return Segmentation(rgb, probabilities, seconds, caption)

    def example_result(key: str) -> Segmentation:
        with example_lock:  # two first clicks on one example run the network once
            if key not in example_results:
                example = example_keys[key]
                rgb = load_rgb(EXAMPLES_DIR / example.file)
                example_results[key] = segment_rgb(rgb, f"Example: {example_label(example, bundle)}")
            return example_results[key]

    def kept_result(key: str | None) -> Segmentation | None:
        """The session's photo and probabilities: an example's, or its own upload's if still kept."""
        if key in example_keys:
            return example_result(key)
        return kept.get(key)

    def after_photo(segmentation: Segmentation) -> None:
        """Once a large photo's working memory is freed (what is kept stays), return it to the system."""
        if segmentation.rgb.shape[0] * segmentation.rgb.shape[1] > LARGE_PHOTO_PIXELS:
            release_freed_memory()

    def run_network(upload: dict | None, kept_key: str | None):
        """Segment the new photo and keep the result for the sliders (the session holds only its key);
        the photo box is emptied for the next one, since the result shows the photo."""
        segmentation = segment_rgb(read_upload(upload))
        # The previous photo goes only now: a slider moved during the pass still finds it. (If the
        # file is refused, forget_photo lets it go.)
        kept.discard(kept_key)
        key = kept.put(segmentation, segmentation.nbytes)
        after_photo(segmentation)
        return key, None

    def forget_photo(kept_key: str | None):
        """After a refused file: nothing of the previous photo stays on the page or in memory."""
        kept.discard(kept_key)
        return None, None, None, NO_PHOTO, None

    def draw(segmentation: Segmentation, threshold: float, opacity: float, colour, from_memory: bool):
        drawn_path, mask_path, stats = render(segmentation, threshold, opacity, parse_colour(colour))
        after_photo(segmentation)
        return ((shown_photo(segmentation), drawn_path), mask_path,
                describe_result(segmentation, stats, threshold, from_memory))

    def redraw(kept_key: str | None, threshold, opacity, colour):
        # Raw values (preprocess=False), so that a bad one gets a message instead of a bare "Error".
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if kept_key is None:
            return None, None, NO_PHOTO
        segmentation = kept_result(kept_key)
        if segmentation is None:
            raise gr.Error("The server made room for other photos; please upload this one again.",
                           print_exception=False)
        return draw(segmentation, threshold, opacity, colour, from_memory=kept_key in example_keys)

    def show_example(index, kept_key: str | None, threshold, opacity, colour):
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(EXAMPLES)):
            raise gr.Error("There is no such example.", print_exception=False)
        kept.discard(kept_key)
        key = f"example-{index}"
        return key, *draw(example_result(key), threshold, opacity, colour, from_memory=True)

    def segment(image: dict, threshold: float):
        """Find the cars in a photo.

        Returns the photo with car pixels tinted and outlined in magenta (JPEG), the binary car
        mask (PNG: car 255, background 0) and {"coverage_percent", "car_regions"}.
        """
        threshold = unit_interval(threshold, "threshold")
        segmentation = segment_rgb(read_upload(image))
        pictures = render(segmentation, threshold, DEFAULT_OPACITY, CAR_COLOUR)
        after_photo(segmentation)
        return pictures

    first_example = next(iter(example_keys))
    opening_result, opening_mask, opening_text = draw(example_result(first_example), engine.default_threshold,
                                                      DEFAULT_OPACITY, hex_colour(CAR_COLOUR), from_memory=True)

    # No delete_cache: start_sweeping below cleans the upload folder instead.
    with gr.Blocks(title="Find the cars") as demo:
        gr.Markdown(
            "# Find the cars in a street photo\n"
            "Drop, paste or take a photo: a network trained on street videos from Cambridge (UK) marks every "
            "car pixel in magenta. Drag the line across the picture to compare with the photo. "
            "How the model was made and how well it does: *About the model*, at the bottom."
        )
        if bundle.notice:
            gr.Markdown(f"> ⚠️ **Warning:** {bundle.notice}", elem_id="model-notice")

        with gr.Row():
            with gr.Column(scale=1, min_width=240):
                # The events below take the raw upload (preprocess=False); "filepath" is also
                # what the API page tells clients to send.
                image_input = gr.Image(
                    label="Your photo", type="filepath", image_mode=None, height=220,
                    sources=["upload", "clipboard", "webcam"], elem_id="photo",
                )
            with gr.Column(scale=3, min_width=320):
                with gr.Group(elem_id="result-panel"):
                    result_view = gr.ImageSlider(
                        opening_result, label="Before / after: drag the line", type="filepath",
                        interactive=False, max_height=RESULT_MAX_HEIGHT, buttons=["fullscreen"], elem_id="result",
                    )
                    result_text = gr.Markdown(opening_text, elem_id="coverage", padding=True)
                with gr.Accordion("Car mask, to download (PNG: car white, the rest black)", open=False,
                                  elem_id="mask-section"):
                    mask_output = gr.Image(opening_mask, label="Car mask", interactive=False, height=240,
                                           buttons=["download", "fullscreen"], elem_id="mask")
            with gr.Column(scale=1, min_width=240):
                threshold_slider = gr.Slider(
                    0.0, 1.0, value=engine.default_threshold, step=0.01, label="Threshold",
                    info="Lower finds more cars and more false alarms; higher, fewer of both. It starts at "
                         f"the threshold chosen on {threshold_chosen_on(bundle.config)}.",
                    elem_id="threshold",
                )
                opacity_slider = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Fill opacity",
                                           info="The outline stays at any opacity.", elem_id="opacity")
                colour_picker = gr.ColorPicker(hex_colour(CAR_COLOUR), label="Colour")

        example_caption = gr.Textbox(visible=False)  # gives the examples' table its column of text
        examples_table = gr.Dataset(
            components=[image_input, example_caption], headers=["Photo", "What it shows"], type="index",
            samples=[[str(EXAMPLES_DIR / example.file), example_label(example, bundle)] for example in EXAMPLES],
            label="Examples: CamVid frames (click one)", elem_id="examples",
        )
        with gr.Accordion("About the model", open=False, elem_id="about"):
            gr.Markdown(describe_model(bundle, engine.runtime))

        segmentation_state = gr.State(first_example, time_to_live=STATE_TIME_TO_LIVE_S, delete_callback=kept.discard)
        sliders = [threshold_slider, opacity_slider, colour_picker]
        result_outputs = [result_view, mask_output, result_text]

        # The network writes only the state; the result is then drawn from the sliders'
        # values at that moment, so it always matches them, even if one moved mid-pass.
        # Private events are only left out of the API page: anyone can still call them, so they
        # check their inputs as /segment does.
        network = image_input.upload(
            run_network, inputs=[image_input, segmentation_state], outputs=[segmentation_state, image_input],
            preprocess=False, concurrency_id="network", trigger_mode="always_last", show_progress_on=[result_view],
            api_name="run_network", api_visibility="private",
        )
        network.success(
            redraw, [segmentation_state, *sliders], result_outputs, preprocess=False, concurrency_id="redraw",
            concurrency_limit=REDRAW_CONCURRENCY, show_progress="hidden", api_name="draw_new_photo",
            api_visibility="private",
        ).success(None, js=SHOW_RESULT_JS)
        network.failure(
            forget_photo, [segmentation_state], [segmentation_state, *result_outputs, image_input],
            concurrency_id="redraw", show_progress="hidden", api_name="forget_photo", api_visibility="private",
        )

        examples_table.click(
            show_example, [examples_table, segmentation_state, *sliders], [segmentation_state, *result_outputs],
            preprocess=False,
            concurrency_id="redraw", show_progress_on=[result_view], api_name="show_example",
            api_visibility="private",
        ).success(None, js=SHOW_RESULT_JS)

        gr.on(
            [threshold_slider.change, opacity_slider.change, colour_picker.change], redraw,
            inputs=[segmentation_state, *sliders], outputs=result_outputs, preprocess=False,
            trigger_mode="always_last", concurrency_id="redraw", concurrency_limit=REDRAW_CONCURRENCY,
            show_progress="hidden", api_name="redraw", api_visibility="private",
        )

        # API only (no trigger in the page): (image, threshold) -> (drawn cars, mask, stats).
        drawn_output = gr.Image(visible=False, label="Cars")
        stats_output = gr.JSON(visible=False, label="Car coverage")
        gr.on(
            [], segment, inputs=[image_input, threshold_slider],
            outputs=[drawn_output, mask_output, stats_output], preprocess=False,
            concurrency_id="network", api_name="segment",
        )

    demo.queue(default_concurrency_limit=NETWORK_CONCURRENCY, max_size=QUEUE_SIZE)
    limit_waiting_events_per_session(demo, MAX_WAITING_PER_SESSION)
    start_sweeping(demo, CACHE_SWEEP_INTERVAL_S, CACHE_MAX_AGE_S, PARTIAL_UPLOAD_IDLE_S)
    return demo
