"""Video clips for the tests, written with PyAV from the CamVid fixture frames (or frames given), and
stand-in engines that answer instantly. Test modules import from here, never from each other."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from helpers import CAMVID_FIXTURE

# Container and codec of each kind of clip a visitor may upload.
KINDS = {"mp4-h264": ("mp4", "libx264"), "mov-h264": ("mov", "libx264"), "mp4-hevc": ("mp4", "libx265"),
         "webm-vp9": ("webm", "libvpx-vp9")}


def camvid_frames() -> list[np.ndarray]:
    """The six fixture frames (480x360 RGB), train then val."""
    paths = sorted((CAMVID_FIXTURE / "train").glob("*.png")) + sorted((CAMVID_FIXTURE / "val").glob("*.png"))
    return [np.asarray(Image.open(path).convert("RGB")) for path in paths]


def write_clip(path: Path, frames: list[np.ndarray], codec: str = "libx264", fps: int = 10,
               times: list[float] | None = None, rotation: int = 0, pix_fmt: str = "yuv420p") -> Path:
    """`frames` (RGB, all one size) as a clip at `path` (its suffix names the container), at `fps` or at
    `times` (seconds, for a variable frame rate), tagged with a display `rotation` (degrees counter-clockwise)."""
    with av.open(str(path), "w") as container:
        options = {"x265-params": "log-level=error"} if codec == "libx265" else {}
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[index] * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def camvid_clip(path: Path, count: int = 12, size: tuple[int, int] | None = None, **options) -> Path:
    """`count` frames cycling through the fixture frames (two of each in a row), resized to `size` (w, h)."""
    frames = camvid_frames()
    chosen = [frames[(index // 2) % len(frames)] for index in range(count)]
    if size is not None:
        chosen = [np.asarray(Image.fromarray(frame).resize(size)) for frame in chosen]
    return write_clip(path, chosen, **options)


def decoded(path: Path) -> tuple[list[np.ndarray], list[float], av.video.stream.VideoStream]:
    """A clip's frames (RGB, as stored), their times, and its stream's codec name, pixel format and size."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
            times.append(float(frame.time))
        facts = {"codec": stream.codec_context.name, "pix_fmt": stream.codec_context.pix_fmt,
                 "width": stream.codec_context.width, "height": stream.codec_context.height}
    return frames, times, facts


class RedEngine:
    """Answers at once: the probability is the red channel (0-1) at half the frame's resolution, as a
    network's answer is smaller than the frame. Records the size of every frame it is fed."""

    def __init__(self):
        self.fed: list[tuple[int, int]] = []

    def network_probabilities(self, rgb: np.ndarray) -> np.ndarray:
        self.fed.append(rgb.shape[:2])
        red = rgb[::2, ::2, 0].astype(np.float32) / 255
        return np.ascontiguousarray(red)


class BlankEngine(RedEngine):
    """Finds nothing anywhere: the overlay leaves every frame as it was."""

    def network_probabilities(self, rgb: np.ndarray) -> np.ndarray:
        return super().network_probabilities(rgb) * 0
