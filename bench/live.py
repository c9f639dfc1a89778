"""The live camera tab in Chromium with a fake camera: frames per second shown, and the delay from a
camera frame to its overlay on the page.

    python -m bench.live                       # the default model, 480x360 camera, 20 s: a markdown table
    python -m bench.live --seconds 10 --size 1280x720 --viewers 2
    python -m bench.live --tiny                        # a tiny untrained network: what all but the network costs
    python -m bench.live --screenshots docs/images     # live-desktop.png and live-phone.png

The fake camera plays a YUV4MPEG2 clip written here from CamVid frames, each stamped with its index as a
row of black and white squares (`stamp_index`). In the page, each time the overlay picture changes it is
decoded, its squares read, and so are those of the frame the <video> shows at that moment: the delay is
(index in the camera now - index in the overlay) frames of 1/CLIP_FPS s each, so it is quantised to one
camera frame (40 ms) and counts everything between the camera and the screen: the page's capture and
JPEG encoding, the upload, the queue, decoding, the network, drawing, encoding and the answer. The frame
rate is the overlays shown per second. Where the time goes is read from the server: the status line's
network time, and the page's own timings of each upload (POST /stream) and answer.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
CAMVID_FRAMES = sorted((REPO_ROOT / "tests" / "fixtures" / "camvid").glob("*/*.png"))
CAMVID_FRAMES = [path for path in CAMVID_FRAMES if "annot" not in path.parent.name]
CLIP_FPS = 25
# The index code: BITS squares of SQUARE pixels in a row at the top left, white for 1, black for 0,
# on a black band (164 pixels wide: a portrait 360-wide frame holds it); they survive the browser's and
# the server's JPEG and the overlay's tint.
BITS = 10
SQUARE = 12
MARGIN = 4
# A square is white when its green exceeds this: the default magenta tint (40%) leaves white at 153
# green and black, or a magenta outline, at 0.
WHITE_GREEN = 80
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def stamp_index(rgb: np.ndarray, index: int) -> np.ndarray:
    """`rgb` with `index` (mod 2**BITS) written as a row of squares, least significant bit first."""
    stamped = rgb.copy()
    stamped[:SQUARE + 2 * MARGIN, :BITS * (SQUARE + MARGIN) + MARGIN] = 0
    for bit in range(BITS):
        x = MARGIN + bit * (SQUARE + MARGIN)
        stamped[MARGIN:MARGIN + SQUARE, x:x + SQUARE] = 255 if (index >> bit) & 1 else 0
    return stamped


def read_index(rgb: np.ndarray, camera_width: int) -> int:
    """The index `stamp_index` wrote on a `camera_width` wide frame, read from the squares' centres of
    `rgb` (that frame at any scale: the overlay of a 1280x720 camera is 640 wide)."""
    scale = rgb.shape[1] / camera_width
    value = 0
    for bit in range(BITS):
        x = round((MARGIN + bit * (SQUARE + MARGIN) + SQUARE / 2) * scale)
        y = round((MARGIN + SQUARE / 2) * scale)
        if rgb[y, x, 1] > WHITE_GREEN:
            value |= 1 << bit
    return value


# The same reading in the page (pixels: a canvas's getImageData, width: the picture's width).
READ_INDEX_JS = f"""(pixels, width, cameraWidth) => {{
  const scale = width / cameraWidth;
  let value = 0;
  for (let bit = 0; bit < {BITS}; bit++) {{
    const x = Math.round(({MARGIN} + bit * ({SQUARE} + {MARGIN}) + {SQUARE} / 2) * scale);
    const y = Math.round(({MARGIN} + {SQUARE} / 2) * scale);
    const at = 4 * (y * width + x);
    if (pixels[at + 1] > {WHITE_GREEN}) value |= 1 << bit;
  }}
  return value;
}}"""


def clip_frames(frames: int, size: tuple[int, int] = (360, 480), stamp: bool = True):
    """`frames` RGB frames of (height, width) `size`: the CamVid fixture frames, each held a second and
    panned a pixel a frame (so consecutive frames differ), stamped with their index (unless not `stamp`)."""
    height, width = size
    pictures = [cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for path in CAMVID_FRAMES]
    for index in range(frames):
        picture = pictures[(index // CLIP_FPS) % len(pictures)]
        panned = np.roll(picture, index % CLIP_FPS, axis=1)
        # Fill the camera's frame, cropping what does not fit its aspect (a portrait phone: the middle).
        scale = max(height / panned.shape[0], width / panned.shape[1])
        resized = cv2.resize(panned, (round(panned.shape[1] * scale), round(panned.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
        top, left = (resized.shape[0] - height) // 2, (resized.shape[1] - width) // 2
        frame = resized[top:top + height, left:left + width]
        yield stamp_index(frame, index) if stamp else frame


def write_y4m(path: Path, frames, size: tuple[int, int], fps: int = CLIP_FPS) -> Path:
    """RGB `frames` of (height, width) `size` as an uncompressed YUV4MPEG2 4:2:0 clip: what Chromium's
    --use-file-for-fake-video-capture plays (in a loop)."""
    height, width = size
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            out.write(b"FRAME\n")
            out.write(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def chromium_args(clip: Path) -> list[str]:
    return [*CHROMIUM_ARGS, f"--use-file-for-fake-video-capture={clip}"]


def start_live(page, timeout_ms: float = 120_000) -> None:
    """Open the live tab, give it the camera and start streaming (as a person would click)."""
    page.get_by_role("tab", name="Live camera").click()
    camera = page.locator("#live-camera")
    camera.get_by_text("Click to Access Webcam").click()
    page.wait_for_function("() => document.querySelector('#live-camera video')?.videoWidth > 0",
                           timeout=timeout_ms)
    camera.get_by_role("button", name="capture photo").click()


# Installed in the page before streaming: records, for each new overlay, when it was shown, its index
# and the camera's index at that moment; and the duration of each frame's upload.
RECORD_JS = """(readIndex) => {
  readIndex = eval(readIndex);
  window.liveRecord = {shown: [], uploads: []};
  const canvas = document.createElement("canvas");
  const context = canvas.getContext("2d", {willReadFrequently: true});
  const pixels = (source, width, height) => {
    canvas.width = width; canvas.height = height;
    context.drawImage(source, 0, 0, width, height);
    return context.getImageData(0, 0, width, height).data;
  };
  let last = null;
  const watch = async (image) => {
    const src = image.src;
    if (!src || !src.startsWith("data:") || src === last) return;
    last = src;
    try { await image.decode(); } catch (error) { return; }
    const at = performance.now();
    const video = document.querySelector("#live-camera video");
    if (!video || !video.videoWidth) return;
    const width = video.videoWidth;
    const camera = readIndex(pixels(video, width, video.videoHeight), width, width);
    const shown = readIndex(pixels(image, image.naturalWidth, image.naturalHeight), image.naturalWidth, width);
    window.liveRecord.shown.push({at, shown, camera, bytes: src.length,
                                  cameraSize: `${width}x${video.videoHeight}`});
  };
  // The live tab is drawn only when opened, and its picture replaced: watch the whole page.
  new MutationObserver((changes) => {
    for (const change of changes) {
      const images = change.type === "attributes" ? [change.target] : document.querySelectorAll("#live-overlay img");
      for (const image of images) if (image.tagName === "IMG" && image.closest("#live-overlay")) watch(image);
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ["src"]});
  const send = window.fetch;
  window.fetch = async (...args) => {
    const url = String(args[0] && args[0].url || args[0]);
    const started = performance.now();
    const answer = await send(...args);
    if (/\\/stream\\/[0-9a-f]+$/.test(url)) {
      window.liveRecord.uploads.push({at: started, ms: performance.now() - started});
    }
    return answer;
  };
}"""


@dataclass(frozen=True)
class LiveMeasure:
    camera: str
    viewers: int
    seconds: float
    frames_shown: int
    frames_per_second: float
    delay_ms: float  # median
    delay_p90_ms: float
    upload_ms: float  # median POST /stream
    sent_per_shown: float  # frames the page sent for each overlay it showed (1: it waits for each answer)
    status: str  # the page's status line at the end


def summarise(record: dict, seconds: float, camera: str, viewers: int, status: str, clip_frames: int,
              skip_s: float = 2.0) -> LiveMeasure:
    """What `RECORD_JS` recorded, less the first `skip_s` (the network's first pass, the stream starting)."""
    shown = record["shown"]
    if not shown:
        raise RuntimeError("the page showed no overlay")
    start = shown[0]["at"] + 1000 * skip_s
    kept = [entry for entry in shown if entry["at"] >= start] or shown
    span_s = (kept[-1]["at"] - kept[0]["at"]) / 1000
    rate = (len(kept) - 1) / span_s if span_s > 0 else float("nan")
    # The page asks the camera for 640x480 at most (demo.live.CAMERA_CONSTRAINTS): Chromium's fake camera
    # then scales or crops a larger clip, and the code's squares move: no delay can be read from it.
    camera_gave = kept[-1]["cameraSize"]
    delays = [1000 / CLIP_FPS * ((entry["camera"] - entry["shown"]) % clip_frames) for entry in kept
              if camera_gave == camera] or [float("nan")]
    uploads = [entry for entry in record["uploads"] if kept[0]["at"] <= entry["at"] <= kept[-1]["at"]]
    sent_per_shown = len(uploads) / max(1, len(kept) - 1)
    uploads = [entry["ms"] for entry in uploads] or [float("nan")]
    return LiveMeasure(f"{camera}" + ("" if camera_gave == camera else f" (the camera gave {camera_gave})"),
                       viewers, seconds, len(kept), rate, statistics.median(delays),
                       float(np.percentile(delays, 90)), statistics.median(uploads), sent_per_shown, status)


def measure(url: str, clip: Path, camera: str, clip_length: int, seconds: float, viewers: int = 1,
            viewport: dict | None = None) -> list[LiveMeasure]:
    """`viewers` pages streaming the fake camera at once for `seconds`, each measured."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(clip))
        pages = []
        for _ in range(viewers):
            context = browser.new_context(viewport=viewport or {"width": 1366, "height": 900},
                                          permissions=["camera"])
            page = context.new_page()
            page.goto(url)
            page.evaluate(RECORD_JS, READ_INDEX_JS)
            start_live(page)
            pages.append(page)
        for page in pages:
            page.wait_for_function("() => window.liveRecord.shown.length > 0", timeout=180_000)
        time.sleep(seconds)
        results = []
        for page in pages:
            record = page.evaluate("() => window.liveRecord")
            lines = page.locator("#live-status").inner_text().splitlines()
            status = next((line for line in lines if "frames" in line), " ".join(lines))
            results.append(summarise(record, seconds, camera, viewers, status, clip_length))
        browser.close()
    return results


SCREENSHOTS = {"live-desktop.png": {"width": 1366, "height": 900}, "live-phone.png": {"width": 390, "height": 844}}


def take_screenshots(url: str, clip: Path, folder: Path) -> list[Path]:
    """The live tab streaming the fake camera, at desktop and phone sizes, once a few overlays were shown."""
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=chromium_args(clip))
        for name, viewport in SCREENSHOTS.items():
            context = browser.new_context(viewport=viewport, permissions=["camera"])
            page = context.new_page()
            page.goto(url)
            page.evaluate(RECORD_JS, READ_INDEX_JS)
            start_live(page)
            page.wait_for_function("() => window.liveRecord.shown.length >= 10", timeout=180_000)
            page.wait_for_function("() => /frames a second/.test(document.querySelector('#live-status').innerText)")
            saved.append(folder / name)
            page.screenshot(path=saved[-1])
            context.close()
        browser.close()
    return saved


def markdown_table(results: list[LiveMeasure]) -> str:
    lines = ["| camera | viewers | frames shown | frames per second shown | delay median (p90) | upload (POST /stream) "
             "| frames sent per overlay | status line at the end |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for result in results:
        lines.append(f"| {result.camera} | {result.viewers} | {result.frames_shown} | {result.frames_per_second:.1f} "
                     f"| {result.delay_ms:.0f} ms ({result.delay_p90_ms:.0f} ms) | {result.upload_ms:.0f} ms "
                     f"| {result.sent_per_shown:.2f} "
                     f"| {result.status.strip()} |")
    return "\n".join(lines)


def page_frame(rgb: np.ndarray) -> dict:
    """`rgb` as the page streams it: canvas.toDataURL("image/jpeg"), Chromium's default quality 0.92."""
    import base64

    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    return {"url": "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode()}


def server_steps_ms(model_dir: Path, size: tuple[int, int], repeats: int = 30) -> dict:
    """Median milliseconds of each step of the server's work on one frame (demo.live.LiveMode.frame), timed
    in interleaved rounds in this process, and what Gradio's own output (a WebP file in its cache, which
    the page would then fetch) would cost instead of the JPEG data URL."""
    import gradio.processing_utils

    from bench.timing import interleaved_durations_ms
    from demo.engine import SegmentationEngine
    from demo.handlers import CAR_COLOUR, DEFAULT_OPACITY, hex_colour
    from demo.live import LiveMode, LiveSession, decode_frame, jpeg_data_url
    from demo.loading import load_bundle

    bundle = load_bundle(model_dir)
    engine = SegmentationEngine(bundle.model, bundle.config)
    live, session = LiveMode(engine), LiveSession()
    engine = live.engine  # fed as the live camera feeds it (LIVE_FEED_SCALE)
    value = page_frame(next(iter(clip_frames(1, size))))
    rgb, _ = decode_frame(value)
    probabilities = engine.network_probabilities(rgb)
    colour = hex_colour(CAR_COLOUR)
    drawn = live.overlay(session, rgb, probabilities, engine.default_threshold, DEFAULT_OPACITY, colour)
    with tempfile.TemporaryDirectory(prefix="bench-live-cache-") as cache:
        durations = interleaved_durations_ms({
            "decode the page's JPEG": lambda: decode_frame(value),
            "network": lambda: engine.network_probabilities(rgb),
            "smooth, threshold, draw": lambda: live.overlay(session, rgb, probabilities, engine.default_threshold,
                                                            DEFAULT_OPACITY, colour),
            "encode the JPEG data URL": lambda: jpeg_data_url(drawn),
            "the whole frame (LiveMode.frame)": lambda: live.frame(value, session, engine.default_threshold,
                                                                   DEFAULT_OPACITY, colour),
            "instead: Gradio's WebP file": lambda: gradio.processing_utils.save_img_array_to_cache(
                drawn, cache, format="webp"),
        }, repeats)
    return {name: statistics.median(values) for name, values in durations.items()}


def steps_table(steps: dict) -> str:
    lines = ["| server step, one frame | median ms |", "|---|---:|"]
    lines += [f"| {name} | {ms:.1f} |" for name, ms in steps.items()]
    return "\n".join(lines)


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(part) for part in text.lower().split("x"))
    return height, width


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "demo" / "default_model")
    parser.add_argument("--size", type=parse_size, default=(360, 480), help="camera WIDTHxHEIGHT (default 480x360)")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--viewers", type=int, default=1, help="pages streaming at once")
    parser.add_argument("--clip-frames", type=int, default=10 * CLIP_FPS, help="the fake camera's loop")
    parser.add_argument("--tiny", action="store_true",
                        help="serve the tests' tiny untrained U-Net instead (a fast network: what the rest costs)")
    parser.add_argument("--screenshots", type=Path, metavar="FOLDER",
                        help="only save live-desktop.png and live-phone.png there (docs/images)")
    arguments = parser.parse_args(argv)
    if not CHROMIUM.exists():
        raise SystemExit(f"{CHROMIUM} is not installed (apt-get install chromium)")

    import sys
    sys.path.insert(0, str(REPO_ROOT / "tests"))
    from helpers import free_port, make_tiny_bundle, running_app_py

    from bench.machine import other_busy_processes

    height, width = arguments.size
    with tempfile.TemporaryDirectory(prefix="bench-live-") as scratch:
        scratch = Path(scratch)
        clip = write_y4m(scratch / "camera.y4m", clip_frames(arguments.clip_frames, arguments.size), arguments.size)
        if arguments.tiny:
            arguments.model_dir = make_tiny_bundle(scratch / "tiny")
        port = free_port()
        busy = other_busy_processes()
        with running_app_py(arguments.model_dir, port, scratch / "app.log"):
            if arguments.screenshots:  # without the index code, which only the measurement needs
                plain = write_y4m(scratch / "plain.y4m", clip_frames(arguments.clip_frames, arguments.size, False),
                                  arguments.size)
                for path in take_screenshots(f"http://127.0.0.1:{port}/", plain, arguments.screenshots):
                    print(f"saved {path}")
                return
            results = measure(f"http://127.0.0.1:{port}/", clip, f"{width}x{height}", arguments.clip_frames,
                              arguments.seconds, arguments.viewers)
        steps = server_steps_ms(arguments.model_dir, arguments.size)  # while a tiny bundle still exists
    model = "the tiny untrained U-Net" if arguments.tiny else arguments.model_dir.name
    others = ", ".join(f"{entry['command'][:40]} ({entry['cpu_percent']:.0f}% CPU)"
                       for entry in busy["busy_processes"])
    print(f"Live camera, {model}, {arguments.seconds:.0f} s measured after 2 s, "
          f"{os.cpu_count()} CPUs; "
          f"at the start the load average was {busy['load_average'][0]:.1f}, other processes: {others or 'none'}\n")
    print(markdown_table(results))
    print(f"\nWhere the server's time goes (this process, {width}x{height} frames, interleaved rounds):\n")
    print(steps_table(steps))


if __name__ == "__main__":
    main()
