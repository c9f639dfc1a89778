"""A dashcam clip in, the same clip with the class drawn on every frame out (issue #40).

`segment_clip` makes the one network pass: it decodes the clip frame by frame (never the whole clip in
memory), runs the network on a frame every NETWORK_INTERVAL seconds (`network_stride`), passes its uint8
probabilities through `demo.temporal.shipped_smoother` (a running average moved along the picture's optical
flow: fewer blinking pixels, no trailing behind moving cars; `bench.flicker`), which also carries the
last answer along the flow into the frames the network skipped, keeps every frame's probabilities in a file
on disk at the network's resolution, and draws and encodes the overlaid clip. `render_clip` redraws it for
another threshold, opacity or colour from the kept probabilities and the source decoded again: no network,
so a fraction of the first pass.

Decoding and encoding run in threads beside the network (PyAV releases the GIL in FFmpeg's calls), so
they overlap it where a core is free (on 2 cores the network's own threads already fill both, and
`bench.clips` measured the first pass at about the sum of its stages' times, or slower). The output is H.264
(libx264), yuv420p, mp4 with its index first (faststart), which
Chromium plays and Gradio serves as is (no system ffmpeg needed). Each output frame keeps its source
frame's time, so a variable-frame-rate clip stays in step with the original.

What a clip becomes:
- only its first MAX_SECONDS seconds and MAX_FRAMES frames are processed (the result says so);
- its rotation tag (portrait phone clips) is applied: the output is as the clip is displayed;
- frames larger than MAX_OUTPUT_SIDE (long side) are scaled down to it before anything else;
- an odd width or height loses its last column or row (yuv420p needs even sides).
"""
from __future__ import annotations

import math
import queue
import shutil
import tempfile
import threading
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import av
import cv2
import numpy as np

from demo.handlers import draw_cars  # the page's own drawing, so a clip's frames look like its photos
from demo.temporal import push_frame, shipped_smoother, to_uint8

# Seconds and frames of a clip processed: a minute of a 30 fps dashcam, about a minute of work on a CPU.
MAX_SECONDS = 60.0
MAX_FRAMES = 1800
# Frames whose long side is longer are scaled down to it (4K and 8K clips): the overlay is judged by eye,
# and encoding 4K frames on a CPU would take longer than the network.
MAX_OUTPUT_SIDE = 1280
# Clips with more pixels per frame than 8K UHD are refused before decoding (one frame would weigh 100+ MB).
MAX_SOURCE_PIXELS = 7680 * 4320
MIN_SIDE = 16
# libx264's speed against size, measured by `python -m bench.clips` (BENCHMARKS.md, section 8): at 480x360
# superfast took 8.6 ms a frame for 1.9 Mbit/s, veryfast 10.6 ms for 1.5, ultrafast 3.4 ms for 3.4 (it
# drops CABAC and the deblocking filter: nearly twice the file, blockier). The encoder shares the CPU with
# the network, so the cheapest preset whose file stays small. CRF 23 is x264's default quality.
PRESET = "superfast"
CRF = 23
# Output timestamps count in 1/90000 s (MPEG's clock): fine enough for any source frame time.
OUTPUT_TIME_BASE = Fraction(1, 90000)
# The network sees a frame every NETWORK_INTERVAL seconds of the clip (every 3rd frame at 30 fps, every frame at
# 10 fps or less, never fewer than every MAX_NETWORK_STRIDE-th: `network_stride`); the smoother carries its last
# answer along the optical flow into the frames between (`demo.temporal.FlowExponentialSmoother`). A 480x360
# clip went from 10.2 to 25.8 frames a second, 1280x720 from 8.0 to 18.0 (`python -m bench.clips`, BENCHMARKS.md
# section 8: the network was four fifths of a frame's cost). On `python -m bench.flicker`'s pans (section 9) the
# mean IoU stayed above frame by frame's: every 3rd frame +0.0028 and +0.0018 at 2.2 and 6.6 px a frame (the
# network on every frame: +0.0034 and +0.0059), and one-frame blinks fell further. Carried longer it loses:
# every 6th frame of those 25 fps pans (0.24 s) -0.0145 on the fast one; every 6th at 3.3 px a frame (a 50 fps
# clip of it, `--speeds 1.5`) +0.0000 where every 3rd kept +0.0039: hence the cap. Not measured: cars that
# move on their own (the pans move only the camera); the flow follows them, less well than the picture.
# Those pans are over val frames, of drives the model trained on. On drives held out of training (`bench.flicker
# --bundle runs/cars-without-DRIVE/bundle --data-dir runs/holdout-DRIVE/data`, the held-out runs of
# training.large_photos) every 3rd frame gained on 0006R0 (+0.0060, +0.0088) but lost on 0001TP (-0.0050 and
# -0.0128 on the fast pan, against +0.0000 and +0.0016 with the network on every frame; every 2nd frame -0.0033,
# -0.0044): a trade of IoU on fast pans for speed, open for the next planning (every 2nd frame: ~21 fps).
NETWORK_INTERVAL = 0.1
MAX_NETWORK_STRIDE = 3


def network_stride(fps: float) -> int:
    """Every how many frames of a clip at `fps` the network runs (NETWORK_INTERVAL)."""
    return min(MAX_NETWORK_STRIDE, max(1, round(fps * NETWORK_INTERVAL))) if fps > 0 else 1


# Frames waiting between the decoding thread, the network and the encoding thread.
QUEUE_FRAMES = 8

Progress = Callable[[int, "int | None"], None]


class ClipError(ValueError):
    """A clip the app cannot process; str(error) is the message for the user."""


NOT_A_VIDEO = "This file is not a video the app can read; please upload an MP4, MOV or WebM clip."
NO_VIDEO_TRACK = "This file has no video track (is it a sound recording?); please upload a video clip."
EMPTY_FILE = "This file is empty (0 bytes); please upload a video clip."
NO_FRAMES = "This video is empty: it has no frames to show."
DAMAGED = "This video is damaged or cut short: not one of its frames could be decoded."
DAMAGED_INDEX = ("This MP4/MOV file is damaged or cut short (its index is missing, as when an upload or a recording "
                 "stops early); please upload the whole clip.")
STILL_PICTURE = "This is a still picture, not a video; photos go in the photo tab (or the API's /segment)."
# FFmpeg's readers of single pictures (a JPEG opens as a one-frame "video").
STILL_FORMATS = ("image2", "_pipe")
# The containers a clip may come in (FFmpeg's names). FFmpeg reads much else as "video", a text file
# included (as ANSI art), none of which a visitor means as a clip.
CLIP_FORMATS = {"mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi", "mpegts", "mpeg", "flv", "ogg", "asf", "gif"}


@dataclass(frozen=True)
class ClipInfo:
    """What `probe_clip` reads from the file and its first frame."""

    width: int  # as displayed (rotation applied)
    height: int
    fps: float  # the average frame rate
    frames: int | None  # as the container states them (None when it does not, as WebM)
    seconds: float | None
    codec: str
    rotation: int  # degrees counter-clockwise the stored frames are turned for display: 0, 90, 180 or 270


@dataclass
class ClipState:
    """What `render_clip` needs to redraw a clip without the network."""

    source: Path
    probabilities: Path  # uint8 (frames, height, width) at the network's resolution, raw, on disk
    probability_shape: tuple[int, int]
    frame_count: int
    frame_times: list[float]
    info: ClipInfo
    notice: str | None = None
    renders: int = 0  # outputs written so far, to name the next one

    def kept_probabilities(self) -> np.ndarray:
        return np.memmap(self.probabilities, np.uint8, "r", shape=(self.frame_count, *self.probability_shape))

    @property
    def nbytes(self) -> int:
        """Bytes on disk (not in memory) kept for redrawing."""
        return self.frame_count * self.probability_shape[0] * self.probability_shape[1]

    def cleanup(self) -> None:
        """Delete the kept probabilities (the source and the rendered clips are not this state's)."""
        self.probabilities.unlink(missing_ok=True)


@dataclass
class ClipResult:
    video: Path  # the overlaid clip: H.264 (libx264) yuv420p mp4 with faststart
    coverage: list[float]  # percent of pixels of the class, per frame, at the threshold used
    frame_times: list[float]  # seconds of each frame, the first at 0
    info: ClipInfo
    notice: str | None
    state: ClipState = field(repr=False)


# --- reading -------------------------------------------------------------------------------------

def _rotation(frame: av.VideoFrame) -> int:
    """The frame's display rotation (its display matrix, as PyAV 18 exposes it) as 0, 90, 180 or 270."""
    return round(frame.rotation / 90) * 90 % 360


def _open(path: Path) -> av.container.InputContainer:
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise ClipError(EMPTY_FILE)
    try:
        container = av.open(str(path), "r")
    except av.error.EOFError as error:  # an empty file, or a WebM header with no frame after it
        raise ClipError(NO_FRAMES) from error
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        try:
            with open(path, "rb") as file:
                head = file.read(12)
        except OSError:
            head = b""
        # An ISO media file (MP4, MOV) starts with its "ftyp" box; without its index FFmpeg cannot open it.
        raise ClipError(DAMAGED_INDEX if head[4:8] == b"ftyp" else NOT_A_VIDEO) from error
    if container.format.name not in CLIP_FORMATS:
        still = any(part in container.format.name for part in STILL_FORMATS)
        container.close()
        raise ClipError(STILL_PICTURE if still else NOT_A_VIDEO)
    return container


def _video_stream(container) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise ClipError(NO_VIDEO_TRACK if container.streams else NO_FRAMES)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads: decoding keeps up with the network
    return stream


def probe_clip(path: Path) -> ClipInfo:
    """The clip's displayed size, frame rate, length, codec and rotation; ClipError if it is not a video
    this app can process. Decodes the first frame only (the rotation is carried by decoded frames, and
    a file whose first frame does not decode is refused here, before any work)."""
    with _open(path) as container:
        stream = _video_stream(container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > MAX_SOURCE_PIXELS:
            raise ClipError(f"This video's frames are {width}x{height}: larger than 8K, which the app "
                            "does not process. Please upload a smaller version.")
        try:
            first = next(container.decode(stream), None)
        except av.error.EOFError:  # Matroska and WebM say so when there is no frame
            first = None
        except av.error.FFmpegError as error:
            raise ClipError(DAMAGED) from error
        if first is None:
            raise ClipError(NO_FRAMES)
        rotation = _rotation(first)
        width, height = first.width, first.height
        if rotation in (90, 270):
            width, height = height, width
        if min(width, height) < MIN_SIDE:
            raise ClipError(f"This video's frames are {width}x{height}: too small to find anything in.")
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        seconds = None
        if container.duration:
            seconds = container.duration / av.time_base
        elif stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        frames = stream.frames or None
        if not fps and frames and seconds:
            fps = frames / seconds
        return ClipInfo(width, height, fps or 30.0, frames, seconds, stream.codec_context.name, rotation)


def output_size(info: ClipInfo) -> tuple[int, int]:
    """(width, height) of the output frames: the displayed size, scaled down to MAX_OUTPUT_SIDE, even."""
    scale = min(1.0, MAX_OUTPUT_SIDE / max(info.width, info.height))
    width, height = info.width, info.height
    if scale < 1:
        width, height = round(width * scale), round(height * scale)
    return width - width % 2, height - height % 2


@dataclass
class _Frame:
    rgb: np.ndarray  # as displayed, at the output size
    time: float  # seconds from the clip's first frame


@dataclass
class _Decoding:
    """How decoding ended: `more` if the clip went on past the frames taken, `damaged` if it broke off."""

    more: bool = False
    damaged: bool = False


_ROTATE = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


def _decoded_frames(path: Path, info: ClipInfo, limit: int, outcome: _Decoding) -> Iterator[_Frame]:
    """The clip's first `limit` frames within MAX_SECONDS, as displayed at `output_size`. A decoding error
    after the first frame ends the clip there (the frames before it stand) and sets `outcome.damaged`."""
    width, height = output_size(info)
    # Scaled in the stored orientation (FFmpeg's scaler, beside the decoder), then turned.
    stored_width, stored_height = (height, width) if info.rotation in (90, 270) else (width, height)
    start = None
    count = 0
    with _open(path) as container:
        frames = container.decode(_video_stream(container))
        while True:
            try:
                frame = next(frames, None)
            except av.error.EOFError:
                return
            except av.error.FFmpegError:
                outcome.damaged = True
                return
            if frame is None:
                return
            time = frame.time if frame.time is not None else count / info.fps
            start = time if start is None else start
            if count == limit or time - start >= MAX_SECONDS:
                outcome.more = True
                return
            # Scaled straight to the even size; an odd side that needs no scaling is cropped by one pixel.
            scaled_width = stored_width + (frame.width - stored_width == 1)
            scaled_height = stored_height + (frame.height - stored_height == 1)
            rgb = frame.to_ndarray(width=scaled_width, height=scaled_height, format="rgb24",
                                   interpolation="AREA")[:stored_height, :stored_width]
            if info.rotation:
                rgb = cv2.rotate(rgb, _ROTATE[info.rotation])
            count += 1
            yield _Frame(np.ascontiguousarray(rgb), time - start)


def _limit_notice(info: ClipInfo, frames: int, last_time: float, outcome: _Decoding) -> str | None:
    # Frames missing at the end without an error: the file was cut short after its index (faststart). A
    # few may be missing from a whole file too (an edit list that skips some): only more is a cut.
    cut_short = not outcome.more and info.frames is not None and info.frames - frames > max(2, info.frames // 20)
    if outcome.damaged or cut_short:
        return (f"This video is damaged or cut short after {last_time:.1f} s: only the frames before "
                "that were processed.")
    if outcome.more:
        length = f" {_seconds_words(info.seconds)}" if info.seconds else ""
        return (f"Only the first {_seconds_words(last_time)} ({frames} frames) of this{length} clip were "
                f"processed: the app takes at most {MAX_SECONDS:.0f} s or {MAX_FRAMES} frames.")
    return None


def _seconds_words(seconds: float) -> str:
    if seconds >= 90:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


# --- threads beside the network -----------------------------------------------------------------

_DONE = object()


class _Reader:
    """Decodes in a thread ahead of the caller, QUEUE_FRAMES at most; iterate it for the frames."""

    def __init__(self, frames: Iterator[_Frame]):
        self._queue: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(frames,), daemon=True, name="clip-decoder")
        self._thread.start()

    def _run(self, frames):
        try:
            for frame in frames:
                while not self._stop.is_set():
                    try:
                        self._queue.put(frame, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as error:  # handed to the caller's thread, raised there
            self._error = error
        finally:
            frames.close()
            self._queue.put(_DONE)

    def __iter__(self):
        while (item := self._queue.get()) is not _DONE:
            yield item
        if self._error is not None:
            raise self._error

    def close(self):
        self._stop.set()
        while self._thread.is_alive():  # let a blocked put through
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()


class _Writer:
    """Encodes in a thread behind the caller: H.264 yuv420p mp4 with faststart, each frame at its time."""

    def __init__(self, path: Path, size: tuple[int, int], fps: float, preset: str = PRESET):
        width, height = size
        self._container = av.open(str(path), "w", format="mp4", container_options={"movflags": "+faststart"})
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(30)
        self._stream = self._container.add_stream("libx264", rate=rate,
                                                  options={"preset": preset, "crf": str(CRF)})
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        self._stream.time_base = OUTPUT_TIME_BASE
        self._stream.codec_context.time_base = OUTPUT_TIME_BASE
        self._last_pts = -1
        self._queue: queue.Queue = queue.Queue(QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="clip-encoder")
        self._thread.start()

    def write(self, rgb: np.ndarray, time: float) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((rgb, time))

    def _run(self):
        try:
            while (item := self._queue.get()) is not _DONE:
                if self._error is not None:
                    continue  # drain, so that the caller never blocks
                rgb, time = item
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                # Each frame at its source time; never two at one tick (the muxer refuses that).
                frame.pts = self._last_pts = max(round(time / OUTPUT_TIME_BASE), self._last_pts + 1)
                frame.time_base = OUTPUT_TIME_BASE
                self._container.mux(self._stream.encode(frame))
        except BaseException as error:
            self._error = error
            while self._queue.get() is not _DONE:
                pass

    def close(self) -> None:
        """Wait for every frame, then write the file's end (and its index at the front)."""
        self._queue.put(_DONE)
        self._thread.join()
        try:
            if self._error is None:
                self._container.mux(self._stream.encode(None))
        finally:
            self._container.close()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._queue.put(_DONE)
        self._thread.join()
        try:
            self._container.close()
        except av.error.FFmpegError:
            pass


# --- drawing -------------------------------------------------------------------------------------

def _draw(rgb: np.ndarray, probabilities: np.ndarray, threshold: float, opacity: float,
          colour: tuple[int, int, int]) -> tuple[np.ndarray, float]:
    """The frame with the class drawn as the page draws it (`demo.handlers.draw_cars`), and its coverage in
    percent. `probabilities`: uint8 (255 = 1.0) at the network's resolution."""
    height, width = rgb.shape[:2]
    scaled = probabilities
    if probabilities.shape != (height, width):
        scaled = cv2.resize(probabilities, (width, height), interpolation=cv2.INTER_LINEAR)
    # p >= threshold, on the uint8 scale: p8 / 255 >= threshold  <=>  p8 >= ceil(255 * threshold).
    mask = scaled >= math.ceil(255 * threshold - 1e-9)
    coverage = 100.0 * float(np.count_nonzero(mask)) / mask.size
    return draw_cars(rgb, mask, colour, opacity), coverage


def _check_drawing(threshold: float, opacity: float) -> None:
    for name, value in (("threshold", threshold), ("opacity", opacity)):
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise ClipError(f"The {name} must be a number from 0 to 1; got {value!r}.")


def _output_path(state: ClipState, workdir: Path) -> Path:
    state.renders += 1
    return workdir / f"overlay-{state.renders}.mp4"


# --- the two passes ------------------------------------------------------------------------------

def segment_clip(engine, source: Path, workdir: Path, threshold: float, opacity: float,
                 colour: tuple[int, int, int], progress: Progress | None = None,
                 smoother=None, network_every: int | None = None) -> ClipResult:
    """The clip at `source` with the class drawn on every frame, written in `workdir` (which must exist);
    one network pass over the clip. `progress(done, total)` after each frame (total None if unknown).
    `smoother`: how frames are combined (a `demo.temporal` smoother; default `shipped_smoother()`).
    `network_every`: the network runs on every this-many-th frame (default `network_stride(the clip's fps)`, or 1
    for a smoother that does not follow motion); the smoother carries its answer along the optical flow into the
    frames between (it must follow motion if > 1).
    ClipError for a clip the app cannot process; on any failure nothing is left in `workdir`."""
    _check_drawing(threshold, opacity)
    smoother = shipped_smoother() if smoother is None else smoother
    follows_motion = getattr(smoother, "needs_frame", False)
    if network_every is not None and (network_every < 1 or (network_every > 1 and not follows_motion)):
        raise ValueError("network_every must be 1, or more with a smoother that follows the motion")
    info = probe_clip(source)
    if network_every is None:
        network_every = network_stride(info.fps) if follows_motion else 1
    workdir = Path(workdir)
    total = None
    if info.frames:
        total = min(info.frames, MAX_FRAMES, max(1, math.ceil(MAX_SECONDS * info.fps)))
    handle, kept_path = tempfile.mkstemp(suffix=".u8", prefix="probabilities-", dir=workdir)
    state = ClipState(source=Path(source), probabilities=Path(kept_path), probability_shape=(0, 0),
                      frame_count=0, frame_times=[], info=info)
    video = _output_path(state, workdir)
    outcome = _Decoding()
    coverage: list[float] = []
    waiting: deque[_Frame] = deque()  # frames whose smoothed probabilities the smoother still holds back
    reader = writer = None

    def draw_ready(smoothed: list[np.ndarray], kept) -> None:
        for probabilities in smoothed:
            frame = waiting.popleft()
            kept.write(probabilities.tobytes())
            drawn, share = _draw(frame.rgb, probabilities, threshold, opacity, colour)
            writer.write(drawn, frame.time)
            coverage.append(share)
            if progress is not None:
                progress(len(coverage), total)

    try:
        with open(handle, "wb") as kept:
            reader = _Reader(_decoded_frames(source, info, MAX_FRAMES, outcome))
            writer = _Writer(video, output_size(info), info.fps)
            for index, frame in enumerate(reader):
                probabilities = None  # a frame the network skips: the smoother carries the last answer into it
                if index % network_every == 0:
                    probabilities = to_uint8(engine.network_probabilities(frame.rgb))
                    state.probability_shape = probabilities.shape
                state.frame_times.append(frame.time)
                waiting.append(frame)
                draw_ready(push_frame(smoother, probabilities, frame.rgb), kept)
            draw_ready(smoother.flush(), kept)
        reader.close()
        writer.close()
        state.frame_count = len(state.frame_times)
        if not state.frame_count:
            raise ClipError(DAMAGED if outcome.damaged else NO_FRAMES)
    except BaseException:
        if reader is not None:
            reader.close()
        if writer is not None:
            writer.abort()
        state.cleanup()
        video.unlink(missing_ok=True)
        raise
    state.notice = _limit_notice(info, state.frame_count, state.frame_times[-1] + 1 / info.fps, outcome)
    return ClipResult(video, coverage, list(state.frame_times), info, state.notice, state)


def render_clip(state: ClipState, workdir: Path, threshold: float, opacity: float, colour: tuple[int, int, int],
                progress: Progress | None = None) -> ClipResult:
    """The clip drawn again at another threshold, opacity or colour: the source decoded again and the kept
    probabilities, no network. ClipError if the kept probabilities are gone (the state was cleaned up)."""
    _check_drawing(threshold, opacity)
    if not state.probabilities.exists() or not state.source.exists():
        raise ClipError("This clip's results have expired; please upload the clip again.")
    workdir = Path(workdir)
    kept = state.kept_probabilities()
    video = _output_path(state, workdir)
    coverage: list[float] = []
    reader = _Reader(_decoded_frames(state.source, state.info, state.frame_count, _Decoding()))
    writer = _Writer(video, output_size(state.info), state.info.fps)
    try:
        for index, frame in enumerate(reader):
            drawn, share = _draw(frame.rgb, kept[index], threshold, opacity, colour)
            # The first pass's times, so that both outputs match frame for frame.
            writer.write(drawn, state.frame_times[index])
            coverage.append(share)
            if progress is not None:
                progress(index + 1, state.frame_count)
        reader.close()
        writer.close()
        if len(coverage) != state.frame_count:
            raise ClipError("This clip's file changed since it was processed; please upload it again.")
    except BaseException:
        reader.close()
        writer.abort()
        video.unlink(missing_ok=True)
        raise
    finally:
        del kept  # the memory map closes with its last reference
    return ClipResult(video, coverage, list(state.frame_times), state.info, state.notice, state)


def remove_workdir(workdir: Path) -> None:
    """Delete a clip's working folder and everything in it (kept probabilities and outputs)."""
    shutil.rmtree(workdir, ignore_errors=True)
