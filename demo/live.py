"""The live camera tab: a webcam's (or a phone camera's) frames come back with the found class drawn on them.

How a frame travels (Gradio 6.31): the page draws the camera's current picture on a canvas every
`STREAM_EVERY_S` and POSTs it as a JPEG data URL to /stream/<event> (plain HTTP, one request a frame);
the server keeps only the newest frame an event was sent, so a slow server skips frames instead of
falling behind, and each answer comes back on the page's event stream (SSE). `LiveMode.frame` decodes
the frame (its longest side brought down to `LIVE_MAX_SIDE`), runs the network, averages the probabilities
with the earlier frames' moved along the optical flow (`demo.temporal.shipped_smoother`, causal: no
delay), thresholds and draws them, and returns the drawing as a JPEG data URL inside the answer itself: no file is written per frame
(at 10 frames a second that would be 36,000 an hour per viewer) and the page need not fetch it with a
second request (Gradio's own way, a WebP file, also costs more to encode: bench/live.py times both).

A live stream holds one of `LIVE_SESSIONS` places for up to `LIVE_TIME_LIMIT_S` of processing; further
viewers wait in the queue ("Waiting" on the camera's button) until a place frees, and a stream that reaches
its limit joins the queue again, so viewers take turns (seen with a 6 s limit and three pages). The places
share the CPU with each other and with photos (their own concurrency_id: a live stream never blocks a photo).
"""
from __future__ import annotations

import base64
import binascii
import io
import statistics
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import gradio as gr
import numpy as np
from PIL import Image, UnidentifiedImageError

from demo.bundle import Bundle
from demo.engine import SegmentationEngine, resize_image, scale_probabilities, threshold_probabilities, timed
from demo.handlers import CAR_COLOUR, DEFAULT_OPACITY, draw_cars, hex_colour, parse_colour
from demo.imaging import MAX_ASPECT_RATIO
from demo.model_facts import class_words
from demo.safeguards import unit_interval
from demo.temporal import push_frame, shipped_smoother

# The live camera feeds the network frames at this share of the training frames' sides (288x384 for the
# shipped model's 360x480): `bench.live` showed 10.4 frames a second (delay 160 ms) where the full feed gave
# 7.1 (200 ms), Chromium on the same 2 cores; car IoU on the held-out drives 0.761 against 0.779.
LIVE_FEED_SCALE = 0.8
# A frame's longest side is brought down to this before the network: a 1280x720 camera costs what a
# 640x360 one does (the network sees about 384x288 worth of pixels anyway: demo.engine.feed_size).
LIVE_MAX_SIDE = 640
# What the page asks the camera for (a phone: its back camera); the camera may give another size.
CAMERA_CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "facingMode": "environment"}}
# The page sends the camera's frame this often, whether or not the previous answer is in (measured:
# bench/live.py's "frames sent per overlay"), and the server runs the newest it has. 12.5 a second leaves
# room above the 10 frames a second aimed at, without one viewer uploading 25 JPEGs a second or taking
# the whole CPU when the network would allow more.
STREAM_EVERY_S = 0.08
# Live streams served at once: they share the CPU (a Space's 2 cores), so each more slows them all.
LIVE_SESSIONS = 2
# Seconds of processing one stream may use before it stops and frees its place (the page's orange bar).
LIVE_TIME_LIMIT_S = 120
# A frame larger than this (in the data URL's characters, and in decoded pixels) is refused unread.
MAX_FRAME_CHARACTERS = 8 * 2**20
MAX_FRAME_PIXELS = 4096 * 4096
# The drawing's JPEG quality (OpenCV's default is 95): fewer bytes to send for every frame.
OVERLAY_JPEG_QUALITY = 80
# A frame is averaged with the previous one only if that came this recently: frames further apart may show
# another scene (a slow server, a camera swung round), and the average would draw the old scene's cars.
SMOOTHING_MAX_GAP_S = 0.3
# The frame rate shown is over this many of the latest frames.
RATE_FRAMES = 20


class FrameError(ValueError):
    """A frame that cannot be used; the message is for the user."""


def decode_frame(value) -> tuple[np.ndarray, tuple[int, int]]:
    """The page's frame (raw: {"url": "data:image/jpeg;base64,..."}) as RGB, its longest side at most
    LIVE_MAX_SIDE, and the (height, width) the camera sent. JPEG frames are decoded straight at a
    fraction of their size when that is enough."""
    url = value.get("url") if isinstance(value, dict) else None
    if not isinstance(url, str) or not url.startswith("data:image/") or "," not in url:
        raise FrameError("The camera's frame did not arrive as a picture.")
    if len(url) > MAX_FRAME_CHARACTERS:
        raise FrameError("The camera's frame is too large to use.")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1], validate=True)))
        width, height = image.size  # read from the header: nothing is decoded yet
        if width * height > MAX_FRAME_PIXELS or max(width, height) > MAX_ASPECT_RATIO * min(width, height):
            raise FrameError(f"The camera's frame is too large to use ({width}x{height} pixels).")
        scale = LIVE_MAX_SIDE / max(width, height)
        if scale < 1:
            image.draft("RGB", (round(width * scale), round(height * scale)))  # JPEG: decode at 1/2, 1/4...
        rgb = np.asarray(image.convert("RGB"))
    except Image.DecompressionBombError as error:  # Pillow's own refusal, past twice its pixel limit
        raise FrameError("The camera's frame is too large to use.") from error
    except (binascii.Error, UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        if isinstance(error, FrameError):
            raise
        raise FrameError("The camera's frame could not be decoded.") from error
    if max(rgb.shape[:2]) > LIVE_MAX_SIDE:  # the rest of the way (draft decodes at 1/2, 1/4, 1/8 only)
        rgb = resize_image(rgb, (max(1, round(height * scale)), max(1, round(width * scale))))
    return rgb, (height, width)


def jpeg_data_url(rgb: np.ndarray) -> dict:
    """`rgb` as an Image output's raw value whose picture travels inside the answer (a JPEG data URL)."""
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, OVERLAY_JPEG_QUALITY])
    if not ok:
        raise FrameError("The drawing could not be encoded.")
    url = "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")
    # No "path": Gradio then leaves the value as it is (no file in its cache) and the page shows the URL.
    return {"path": None, "url": url, "orig_name": "live.jpeg", "mime_type": "image/jpeg",
            "meta": {"_type": "gradio.FileData"}}


@dataclass
class LiveSession:
    """What one viewer's stream keeps between frames (a gr.State): the smoother and recent timings."""

    smoother: object = field(default_factory=lambda: shipped_smoother())
    answered_at: deque = field(default_factory=lambda: deque(maxlen=RATE_FRAMES))
    network_ms: deque = field(default_factory=lambda: deque(maxlen=RATE_FRAMES))

    def frames_per_second(self) -> float | None:
        if len(self.answered_at) < 2 or self.answered_at[-1] <= self.answered_at[0]:
            return None
        return (len(self.answered_at) - 1) / (self.answered_at[-1] - self.answered_at[0])


def describe_live(session: LiveSession, camera_shape: tuple[int, int], drawn_shape: tuple[int, int],
                  fed_shape: tuple[int, int]) -> str:
    """The line under the live picture: frames per second answered, the network's time, the sizes."""
    rate = session.frames_per_second()
    rate_text = f"**{rate:.1f}** frames a second" if rate is not None else "first frame"
    network = statistics.median(session.network_ms)
    drawn = "" if drawn_shape == camera_shape else f", drawn at {drawn_shape[1]}x{drawn_shape[0]}"
    return (f"{rate_text} · the network takes **{network:.0f} ms** a frame · camera frame "
            f"{camera_shape[1]}x{camera_shape[0]}{drawn}, fed to the network at {fed_shape[1]}x{fed_shape[0]}")


class LiveMode:
    """The live tab's frame handler, for one engine (fed at `LIVE_FEED_SCALE` of its sides)."""

    def __init__(self, engine: SegmentationEngine):
        self.engine = engine
        if not engine.config.fixed_input:
            height, width = engine.config.input_size
            self.engine = engine.fed_at((round(height * LIVE_FEED_SCALE), round(width * LIVE_FEED_SCALE)))

    def frame(self, value, session, threshold, opacity, colour):
        """One camera frame in, (the drawing, the session, the status line) out."""
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if not isinstance(session, LiveSession):  # the stream's first frame (or a value from elsewhere)
            session = LiveSession()
        try:
            rgb, camera_shape = decode_frame(value)
        except FrameError as error:
            raise gr.Error(str(error), print_exception=False) from error
        probabilities, seconds = timed(lambda: self.engine.network_probabilities(rgb))
        session.network_ms.append(1000 * seconds)
        drawn = jpeg_data_url(self.overlay(session, rgb, probabilities, threshold, opacity, colour))
        session.answered_at.append(time.monotonic())
        return drawn, session, describe_live(session, camera_shape, rgb.shape[:2], probabilities.shape)

    @staticmethod
    def overlay(session: LiveSession, rgb: np.ndarray, probabilities: np.ndarray, threshold: float,
                opacity: float, colour) -> np.ndarray:
        """`rgb` with the class drawn where its probabilities, averaged with the session's earlier frames'
        (if recent) moved along the optical flow, reach `threshold`."""
        if session.answered_at and time.monotonic() - session.answered_at[-1] > SMOOTHING_MAX_GAP_S:
            session.smoother.flush()  # start afresh: see SMOOTHING_MAX_GAP_S
        # The smoother averages uint8 probabilities; a causal one returns this frame's at once.
        smoothed = push_frame(session.smoother, np.round(probabilities * 255).astype(np.uint8), rgb)[-1]
        mask = threshold_probabilities(scale_probabilities(smoothed, rgb.shape[:2]), threshold * 255)
        return draw_cars(rgb, mask, parse_colour(colour), opacity)


@dataclass(frozen=True)
class LiveComponents:
    camera: gr.Image
    overlay: gr.Image
    status: gr.Markdown
    threshold: gr.Slider
    opacity: gr.Slider
    colour: gr.ColorPicker
    session: gr.State


def build_live_mode(engine: SegmentationEngine, bundle: Bundle, default_threshold: float) -> LiveComponents:
    """The live tab's components and its stream event, inside the open gr.Blocks (and gr.Tab)."""
    _, plural_words = class_words(bundle.config)
    gr.Markdown(f"Point your camera at a street: every frame comes back with its {plural_words} drawn on it. "
                "Press the camera's record button to start, and again to stop.", elem_id="live-intro")
    with gr.Row():
        with gr.Column(scale=1, min_width=280):
            camera = gr.Image(label="Camera", sources=["webcam"], streaming=True, height=300,
                              webcam_options=gr.WebcamOptions(mirror=False, constraints=CAMERA_CONSTRAINTS),
                              elem_id="live-camera")
        with gr.Column(scale=2, min_width=300):
            overlay = gr.Image(label=f"Live: {plural_words} found", interactive=False, format="jpeg",
                               buttons=["fullscreen"], elem_id="live-overlay")
            status = gr.Markdown("Start the camera to see the frame rate and the network's time.",
                                 elem_id="live-status", padding=True)
        with gr.Column(scale=1, min_width=240):
            threshold = gr.Slider(0.0, 1.0, value=default_threshold, step=0.01, label="Threshold",
                                  info=f"Lower finds more {plural_words} and more false alarms.",
                                  elem_id="live-threshold")
            opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Fill opacity",
                                elem_id="live-opacity")
            colour = gr.ColorPicker(hex_colour(CAR_COLOUR), label="Colour", elem_id="live-colour")
    session = gr.State(None, time_to_live=LIVE_TIME_LIMIT_S * 2)
    live = LiveMode(engine)
    camera.stream(
        live.frame, inputs=[camera, session, threshold, opacity, colour], outputs=[overlay, session, status],
        preprocess=False, postprocess=False, stream_every=STREAM_EVERY_S, time_limit=LIVE_TIME_LIMIT_S,
        concurrency_limit=LIVE_SESSIONS, concurrency_id="live", show_progress="hidden",
        api_name="live_frame", api_visibility="private",
    )
    return LiveComponents(camera, overlay, status, threshold, opacity, colour, session)
