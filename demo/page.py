"""The page's layout: its components, in the order it shows them (`build_layout`), and its "About the model" text.

Nothing here reacts to anything: `demo.ui.wire_events` connects the components' events to `demo.handlers`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import gradio as gr

from demo.bundle import Bundle
from demo.examples import EXAMPLES, EXAMPLES_DIR, example_label
from demo.handlers import CAR_COLOUR, DEFAULT_OPACITY, hex_colour
from demo.model_facts import (
    HELD_OUT_RECIPE,
    capitalised,
    class_words,
    dataset_in_words,
    network_in_words,
    runs_in_words,
    held_out_scores,
    runtime_in_words,
    threshold_chosen_on,
    threshold_in_words,
    validation_drives_unseen,
    validation_frames_in_words,
    what_it_is,
)

# The before/after view's tallest; a 4:3 photo then fits a 1366x900 screen with the controls.
RESULT_MAX_HEIGHT = 460
# A session's photo and probabilities are freed this long after its last network pass (or sooner:
# see demo.ui.MAX_KEPT_BYTES).
STATE_TIME_TO_LIVE_S = 30 * 60


def page_title(bundle: Bundle) -> str:
    """What the page is for, as its title and the browser tab's say it: "Find the cars"."""
    return f"Find the {class_words(bundle.config)[1]}"


def describe_model(bundle: Bundle, runtime: str | None = None) -> str:
    """The "About the model" text: what the model is, what it learnt from, how well it does on frames
    it was not trained on (the drives held out of training as well, when the bundle has them), what runs it."""
    config = bundle.config
    singular, _ = class_words(config)
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
               f"{singular}, the share both did; 1 is perfect) on frames it was not trained on:\n" + "\n".join(scores))
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


@dataclass(frozen=True)
class PageComponents:
    """The page's components that events read or write."""

    photo: gr.Image  # the upload box
    result: gr.ImageSlider  # the photo and its drawn class, before/after
    result_text: gr.Markdown
    mask: gr.Image
    threshold: gr.Slider
    opacity: gr.Slider
    colour: gr.ColorPicker
    examples: gr.Dataset
    state: gr.State  # the session's segmentation key (`demo.handlers.PageHandlers`)
    # Outputs of the API's /segment only, never shown.
    drawn_output: gr.Image
    stats_output: gr.JSON

    @property
    def sliders(self) -> list:
        return [self.threshold, self.opacity, self.colour]

    @property
    def result_outputs(self) -> list:
        return [self.result, self.mask, self.result_text]


def build_layout(bundle: Bundle, runtime: str, default_threshold: float, opening,
                 forget_state: Callable[[str], None]) -> PageComponents:
    """The page's components, within the open gr.Blocks. `opening` is (state, before/after pair, mask file,
    result line) as `PageHandlers.opening` gives them; `forget_state` runs when a session's state expires."""
    opening_state, opening_result, opening_mask, opening_text = opening
    singular, plural = class_words(bundle.config)
    gr.Markdown(
        f"# {page_title(bundle)} in a street photo\n"
        f"Drop, paste or take a photo: {network_in_words(bundle.config)} marks every {singular} pixel in magenta. "
        "Drag the line across the picture to compare with the photo. "
        "How the model was made and how well it does: *About the model*, at the bottom."
    )
    if bundle.notice:
        gr.Markdown(f"> ⚠️ **Warning:** {bundle.notice}", elem_id="model-notice")

    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            # The events take the raw upload (preprocess=False); "filepath" is also
            # what the API page tells clients to send.
            photo = gr.Image(
                label="Your photo", type="filepath", image_mode=None, height=220,
                sources=["upload", "clipboard", "webcam"], elem_id="photo",
            )
        with gr.Column(scale=3, min_width=320):
            with gr.Group(elem_id="result-panel"):
                result = gr.ImageSlider(
                    opening_result, label="Before / after: drag the line", type="filepath",
                    interactive=False, max_height=RESULT_MAX_HEIGHT, buttons=["fullscreen"], elem_id="result",
                )
                result_text = gr.Markdown(opening_text, elem_id="coverage", padding=True)
            with gr.Accordion(f"{capitalised(singular)} mask, to download (PNG: {singular} white, the rest black)",
                              open=False, elem_id="mask-section"):
                mask = gr.Image(opening_mask, label=f"{capitalised(singular)} mask", interactive=False, height=240,
                                buttons=["download", "fullscreen"], elem_id="mask")
        with gr.Column(scale=1, min_width=240):
            threshold = gr.Slider(
                0.0, 1.0, value=default_threshold, step=0.01, label="Threshold",
                info=f"Lower finds more {plural} and more false alarms; higher, fewer of both. It starts at "
                     f"the threshold chosen on {threshold_chosen_on(bundle.config)}.",
                elem_id="threshold",
            )
            opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Fill opacity",
                                info="The outline stays at any opacity.", elem_id="opacity")
            colour = gr.ColorPicker(hex_colour(CAR_COLOUR), label="Colour")

    example_caption = gr.Textbox(visible=False)  # gives the examples' table its column of text
    examples = gr.Dataset(
        components=[photo, example_caption], headers=["Photo", "What it shows"], type="index",
        samples=[[str(EXAMPLES_DIR / example.file), example_label(example, bundle)] for example in EXAMPLES],
        label="Examples: CamVid frames (click one)", elem_id="examples",
    )
    with gr.Accordion("About the model", open=False, elem_id="about"):
        gr.Markdown(describe_model(bundle, runtime))

    state = gr.State(opening_state, time_to_live=STATE_TIME_TO_LIVE_S, delete_callback=forget_state)
    drawn_output = gr.Image(visible=False, label=capitalised(plural))
    stats_output = gr.JSON(visible=False, label=f"{capitalised(singular)} coverage")
    return PageComponents(photo, result, result_text, mask, threshold, opacity, colour, examples, state,
                          drawn_output, stats_output)
