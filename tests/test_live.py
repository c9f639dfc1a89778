"""The live camera tab (demo/live.py): its frame handler on frames of every size and on bad values, and,
in Chromium with a fake camera playing a clip written from the CamVid fixture frames, the live tab showing
the camera's frames overlaid."""
from __future__ import annotations

import base64
import io
import os
import time

import cv2
import gradio as gr
import numpy as np
import pytest
from PIL import Image

from bench.live import READ_INDEX_JS, RECORD_JS, chromium_args, clip_frames, read_index, start_live, write_y4m
from demo.engine import SegmentationEngine
from demo.live import LIVE_MAX_SIDE, FrameError, LiveMode, LiveSession, decode_frame
from demo.temporal import ProbabilitySmoother
from helpers import decompression_bomb_png, serving_config

MAGENTA = "#ff00ff"


def data_url(rgb: np.ndarray, kind: str = "JPEG") -> dict:
    """A frame as the page sends it while streaming: {"url": a data URL}."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, kind)
    return {"url": f"data:image/{kind.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()}


def picture(value: dict) -> np.ndarray:
    """The drawing the handler returned (a JPEG data URL) as RGB."""
    assert value["path"] is None and value["url"].startswith("data:image/jpeg;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value["url"].split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def live(mask_model):
    """The live handler on a network whose answer is the red channel: red pixels are the class."""
    return LiveMode(SegmentationEngine(mask_model, serving_config((180, 240))))


def red_left_half(height: int, width: int) -> np.ndarray:
    frame = np.zeros((height, width, 3), np.uint8)
    frame[:, : width // 2, 0] = 255
    frame[:, width // 2:, 2] = 255
    return frame


@pytest.mark.parametrize("height, width", [(360, 480), (720, 1280), (1280, 720), (100, 60)])
def test_a_frame_of_any_size_comes_back_drawn_at_most_the_cap(live, height, width):
    drawn, session, status = live.frame(data_url(red_left_half(height, width)), None, 0.5, 1.0, MAGENTA)
    shown = picture(drawn)
    scale = min(1.0, LIVE_MAX_SIDE / max(height, width))
    assert shown.shape[:2] == (round(height * scale), round(width * scale))
    # Solid magenta on the red half (blue appears), nothing on the blue half (no red appears).
    middle, quarter = shown.shape[0] // 2, shown.shape[1] // 4
    assert shown[middle, quarter, 2] > 200, "the red half is the class"
    assert shown[middle, 3 * quarter, 0] < 60, "the blue half is not"
    assert isinstance(session, LiveSession)
    assert "network takes" in status and f"{width}x{height}" in status


def test_the_frame_rate_and_the_smoothing_are_per_session(live, monkeypatch):
    """Each frame is averaged with its session's previous one (causal): the red half jumping to the right
    leaves both halves at probability 1/2 in that session only; the frame rate appears from the second frame."""
    monkeypatch.setattr("demo.live.SMOOTHING_MAX_GAP_S", 3600)  # however slow the machine is today
    # A plain two-frame average, whose answer is known (the shipped one also follows the picture's motion).
    monkeypatch.setattr("demo.live.shipped_smoother", lambda: ProbabilitySmoother(2, lookahead=0))
    left = red_left_half(180, 240)
    right = left[:, ::-1].copy()
    _, session, status = live.frame(data_url(left, "PNG"), None, 0.5, 1.0, MAGENTA)
    assert "first frame" in status
    drawn, session, status = live.frame(data_url(right, "PNG"), session, 0.6, 1.0, MAGENTA)
    assert "frames a second" in status
    averaged = picture(drawn)
    # The red half now on the right: solid magenta would put blue there, and red on the blue left half.
    assert averaged[90, 180, 2] < 60 and averaged[90, 60, 0] < 60, "1/2 is below the 0.6 threshold on both halves"
    fresh = picture(live.frame(data_url(right, "PNG"), None, 0.6, 1.0, MAGENTA)[0])
    assert fresh[90, 180, 2] > 200, "a new session: the right half alone is the class"
    assert fresh[90, 60, 0] < 60, "and not the left"


def test_a_frame_long_after_the_previous_one_is_not_averaged_with_it(live, monkeypatch):
    """The previous frame may show another scene by then: its cars must not be drawn on this one."""
    monkeypatch.setattr("demo.live.SMOOTHING_MAX_GAP_S", 0.0)
    left = red_left_half(180, 240)
    _, session, _ = live.frame(data_url(left, "PNG"), None, 0.6, 1.0, MAGENTA)
    time.sleep(0.01)
    drawn = picture(live.frame(data_url(left[:, ::-1].copy(), "PNG"), session, 0.6, 1.0, MAGENTA)[0])
    assert drawn[90, 180, 2] > 200 and drawn[90, 60, 0] < 60, "the new frame alone"


@pytest.mark.parametrize("value, message", [
    (None, "did not arrive as a picture"),
    ({"url": "https://example.com/a.jpg"}, "did not arrive as a picture"),
    ({"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "did not arrive as a picture"),
    ({"url": "data:image/jpeg;base64,not base64!"}, "could not be decoded"),
    ({"url": "data:image/jpeg;base64," + base64.b64encode(b"just text").decode()}, "could not be decoded"),
    ({"url": "data:image/png;base64," + base64.b64encode(decompression_bomb_png()).decode()}, "too large"),
    ({"url": "data:image/png;base64," + base64.b64encode(decompression_bomb_png(5000)).decode()},
     r"too large to use \(5000x5000"),
])
def test_a_bad_frame_gets_a_message(live, value, message):
    with pytest.raises(gr.Error, match=message):
        live.frame(value, None, 0.5, 0.4, MAGENTA)
    with pytest.raises(FrameError):
        decode_frame(value)


@pytest.mark.parametrize("threshold, opacity, colour", [(None, 0.4, MAGENTA), (0.5, "abc", MAGENTA),
                                                        (float("nan"), 0.4, MAGENTA), (0.5, 0.4, None)])
def test_bad_slider_values_get_a_message_or_the_default_colour(live, threshold, opacity, colour):
    frame = data_url(red_left_half(90, 120))
    if colour is None:  # any colour the picker cannot send falls back to magenta
        assert live.frame(frame, None, threshold, opacity, colour)[0]["url"]
        return
    with pytest.raises(gr.Error, match="must be a number from 0 to 1"):
        live.frame(frame, None, threshold, opacity, colour)


def test_the_clip_stamp_survives_jpeg_and_scaling():
    """The index code bench/live.py reads back from the page (the measurement's ground)."""
    for index, frame in enumerate(clip_frames(30)):
        assert read_index(frame, 480) == index
        ok, encoded = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 60])
        small = cv2.resize(cv2.imdecode(encoded, cv2.IMREAD_COLOR), (240, 180), interpolation=cv2.INTER_AREA)
        assert read_index(small, 480) == index


# --- in Chromium, with a fake camera ----------------------------------------------------------

CLIP_FRAMES = 50  # 2 s at 25 frames a second, 13 MB; the fake camera loops it
LIVE_TIMEOUT_MS = 120_000


@pytest.fixture(scope="module")
def camera_clip(tmp_path_factory):
    return write_y4m(tmp_path_factory.mktemp("camera") / "camvid.y4m", clip_frames(CLIP_FRAMES), (360, 480))


@pytest.mark.browser
def test_the_live_tab_shows_the_fake_cameras_frames_overlaid(launch_app, tiny_bundle, camera_clip, tmp_path):
    from pathlib import Path

    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        reason = f"{chromium} is not installed (apt-get install chromium); the browser test needs it"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import expect, sync_playwright

    from demo.ui import build_demo

    url = launch_app(build_demo(tiny_bundle))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=chromium_args(camera_clip))
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(url)
        page.evaluate(RECORD_JS, READ_INDEX_JS)
        start_live(page, LIVE_TIMEOUT_MS)
        page.wait_for_function("() => window.liveRecord.shown.length >= 5", timeout=LIVE_TIMEOUT_MS)
        expect(page.locator("#live-status")).to_contain_text("frames a second")
        time.sleep(1)
        shown = page.evaluate("() => window.liveRecord.shown")
        page.screenshot(path=tmp_path / "live.png")
        browser.close()
    indices = [entry["shown"] for entry in shown]
    # The overlays are the camera's frames (their code reads as a frame of the clip), and they move on.
    assert all(0 <= index < CLIP_FRAMES for index in indices), indices
    assert len(set(indices)) >= 3, indices
    # Each overlay shows a frame the camera had shown shortly before (under 2 s: the clip's length).
    assert all(entry["camera"] is not None and entry["camera"] < CLIP_FRAMES for entry in shown), shown
    assert not errors, errors
