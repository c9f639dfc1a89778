"""The page's video mode: a dashcam clip in, the same clip out with the class drawn on every frame.

How a clip flows: the clip box's `change` (an upload, or the end of a webcam recording: Gradio's
Video fires `upload` only for files, `change` for both) runs `ClipPageHandlers.process`, which makes the one
network pass over the clip (`demo.video.segment_clip`) and keeps its probabilities on disk for the
session. Releasing a slider or picking a colour runs `ClipPageHandlers.rerender`: the clip is decoded
again and redrawn from the kept probabilities (`demo.video.render_clip`), with no network.

Both run under their own concurrency id ("clip", one at a time, shared with the API's /segment_video), so
a photo sent meanwhile is not queued behind a clip. `PhotosFirst` can also pause a clip between frames while
a photo's pass runs (`demo.ui.build_demo(photos_first=True)`; off by default, see there).

The layout is built by `build_clip_tab` (within a gr.Tab that `demo.ui.build_demo` opens), the
events are connected by `wire_clip_events`.
"""
from __future__ import annotations

import csv
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import gradio as gr
import pandas as pd
from gradio.data_classes import FileData

from demo.bundle import Bundle
from demo.clip_handlers import COULD_NOT_PROCESS, clip_workdir
from demo.handlers import CAR_COLOUR, DEFAULT_OPACITY, hex_colour, parse_colour
from demo.model_facts import capitalised, class_slug, class_words, threshold_chosen_on
from demo.safeguards import unit_interval, uploaded_file
from demo.video import MAX_SECONDS, ClipError, ClipResult, ClipState, render_clip, segment_clip

logger = logging.getLogger(__name__)

# Clips kept on disk for the sliders, all sessions together; the least recently used goes first
# (a minute of 480x360 frames keeps a few hundred MB of probabilities).
MAX_KEPT_CLIPS = 6
# A session's clip is deleted this long after it was processed (as the photo's: demo.page.STATE_TIME_TO_LIVE_S).
CLIP_TIME_TO_LIVE_S = 30 * 60
# The progress bar is updated at most this often: each update is a message to the browser.
PROGRESS_INTERVAL_S = 0.25
# Once a clip is processed, bring its result into view if it is not: on a phone it ends below the fold.
# Measured half a second later: the panel grows only once the new video has loaded.
SHOW_CLIP_RESULT_JS = """() => setTimeout(() => {
  const panel = document.getElementById("clip-result-panel");
  const box = panel && panel.getBoundingClientRect();
  if (box && (box.top < 0 || box.bottom > window.innerHeight)) panel.scrollIntoView({behavior: "smooth", block: "start"});
}, 500)"""
UNREADABLE_CLIP = "The clip is not among this app's uploads (or has expired); please upload it again."
CLIP_GONE = "The server no longer keeps this clip (it is kept 30 minutes); please upload it again."


def playable_video(**options) -> gr.Video:
    """A gr.Video output that hands the browser the clip file as it is.

    `demo.video` already writes H.264 in an mp4 that Chromium plays, but gr.Video's postprocess probes
    every clip it sends with ffprobe, and re-encodes it with ffmpeg if unsure, whenever ffmpeg is
    installed (as on Spaces): seconds of work for nothing, and an app that would behave differently
    where ffmpeg is missing. Its postprocess is replaced on this one component (a subclass would do,
    but Gradio writes a .pyi stub beside the module of every Component subclass it meets).
    """
    video = gr.Video(**options)
    video.postprocess = lambda value: None if value is None else FileData(path=str(value),
                                                                          orig_name=Path(value).name)
    return video


class PhotosFirst:
    """One engine shared by photos and clips, photos first.

    A clip's network passes (`clip_engine`) wait while a photo's (`photo_engine`) runs: both at once
    would share the CPU's cores, and the photo's visitor waits on a single answer. The clip therefore
    pauses between frames, never mid-frame; `wait_for_photos` is also called between re-rendered frames.
    """

    def __init__(self, engine):
        self.engine = engine
        self._photos = 0  # photo passes running now
        self._turn = threading.Condition()
        self.photo_engine = _EngineTurn(self, photo=True)
        self.clip_engine = _EngineTurn(self, photo=False)

    def wait_for_photos(self) -> None:
        with self._turn:
            self._turn.wait_for(lambda: self._photos == 0)

    def photo_pass(self, rgb, most_pixels=None):
        with self._turn:
            self._photos += 1
        try:
            return self.engine.network_probabilities(rgb, most_pixels)
        finally:
            with self._turn:
                self._photos -= 1
                self._turn.notify_all()


class _EngineTurn:
    """The engine as one side of `PhotosFirst` sees it: the same attributes, network passes taken in turn."""

    def __init__(self, turns: PhotosFirst, photo: bool):
        self._turns, self._photo = turns, photo

    def __getattr__(self, name):  # config, runtime, default_threshold...: the engine's own
        return getattr(self._turns.engine, name)

    def network_probabilities(self, rgb, most_pixels=None):
        if self._photo:
            return self._turns.photo_pass(rgb, most_pixels)
        self._turns.wait_for_photos()
        return self._turns.engine.network_probabilities(rgb, most_pixels)


@dataclass(eq=False)
class ClipSession:
    """What a session keeps of its clip: its own folder (kept probabilities, drawn clips) and the
    clip's state for re-rendering. The session's gr.State holds it; `cleanup` deletes it all."""

    workdir: Path
    clip: ClipState
    kept: bool = True  # False once deleted (replaced, expired or evicted)

    def cleanup(self) -> None:
        self.kept = False
        try:
            self.clip.cleanup()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def coverage_table(result: ClipResult) -> pd.DataFrame:
    """The plot's data: one row per frame, its time and the share of its pixels of the class."""
    return pd.DataFrame({"seconds": [round(t, 3) for t in result.frame_times],
                         "percent": [round(c, 2) for c in result.coverage]})


def describe_clip(result: ClipResult, threshold: float, plural_words: str, seconds_taken: float | None) -> str:
    """The line under the clip: how much of the frame the class covers, on average and at most, and when."""
    coverage, times = result.coverage, result.frame_times
    if not coverage:
        return "The clip has no frames."
    peak = max(range(len(coverage)), key=coverage.__getitem__)
    length = f"{len(coverage)} frames ({times[-1] - times[0] + 1 / max(result.info.fps, 1):.1f} s)"
    text = (f"At threshold {threshold:.2f}, {plural_words} cover **{sum(coverage) / len(coverage):.2f}%** of the "
            f"picture on average, **{coverage[peak]:.2f}%** at most (at {times[peak]:.1f} s); {length}.")
    if seconds_taken is not None:
        text += f" Processed in {seconds_taken:.0f} s."
    return text


def write_coverage_csv(result: ClipResult, path: Path, singular: str) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["frame", "seconds", f"{class_slug(singular)}_percent"])
        for index, (seconds, percent) in enumerate(zip(result.frame_times, result.coverage)):
            writer.writerow([index, f"{seconds:.3f}", f"{percent:.2f}"])
    return path


def progress_reporter(progress: gr.Progress, what: str, turns: PhotosFirst | None) -> Callable[[int, int | None], None]:
    """A `progress(done, total)` for demo.video that moves the page's progress bar (frames done, time
    left) at most every PROGRESS_INTERVAL_S, and lets a waiting photo go first between frames."""
    started = time.monotonic()
    last = 0.0

    def report(done: int, total: int | None) -> None:
        nonlocal last
        if turns is not None:
            turns.wait_for_photos()
        now = time.monotonic()
        if now - last < PROGRESS_INTERVAL_S and done != total:
            return
        last = now
        text = what
        if total and done:
            left = (now - started) * (total - done) / done
            text += f": about {left:.0f} s left"
        progress((done, total), desc=text, unit="frames")

    return report


class ClipPageHandlers:
    """The video tab's events, for one engine (the API's /segment_video is `demo.clip_handlers`'s). Raw values
    arrive unchecked (preprocess=False), so each method checks its own. `turns`: the engine's `PhotosFirst`,
    if photos go first; `workdir_root`: where each clip's folder goes (default: Gradio's upload folder)."""

    def __init__(self, engine, bundle: Bundle, turns: PhotosFirst | None = None,
                 workdir_root: Path | None = None, max_kept: int = MAX_KEPT_CLIPS):
        self.engine, self.bundle, self.turns = engine, bundle, turns
        self.words = class_words(bundle.config)
        self.workdir_root = workdir_root
        self.max_kept = max_kept
        self._kept: OrderedDict[int, ClipSession] = OrderedDict()  # every session's clip, oldest first
        self._lock = threading.Lock()

    def _keep(self, session: ClipSession) -> None:
        with self._lock:
            self._kept[id(session)] = session
            evicted = [self._kept.popitem(last=False)[1] for _ in range(len(self._kept) - self.max_kept)]
        for old in evicted:
            logger.info("Deleted a kept clip to keep at most %d.", self.max_kept)
            old.cleanup()

    def forget(self, session: ClipSession | None) -> None:
        """Delete a session's clip: when its state expires, its tab closes, or a new clip replaces it."""
        if isinstance(session, ClipSession):
            with self._lock:
                self._kept.pop(id(session), None)
            session.cleanup()

    def _outputs(self, session: ClipSession, result: ClipResult, threshold: float, seconds: float | None):
        singular, plural_words = self.words
        csv_path = write_coverage_csv(result, session.workdir / f"{class_slug(singular)}_coverage.csv", singular)
        notice = f"> ⚠️ {result.notice}" if result.notice else ""
        return (result.video, coverage_table(result), describe_clip(result, threshold, plural_words, seconds),
                gr.Markdown(notice, visible=bool(notice)), [str(result.video), str(csv_path)])

    def process(self, upload, session, threshold, opacity, colour, progress=gr.Progress()):
        """A new clip: the network pass over it, drawn at the sliders' values; the previous clip is deleted."""
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if upload is None:  # the clip box was cleared: nothing to do
            return (gr.skip(),) * 6
        try:
            source = uploaded_file(upload)
        except gr.Error:
            raise gr.Error(UNREADABLE_CLIP, print_exception=False) from None
        # Inside Gradio's upload folder by default: served from there, and swept like uploads should one stay.
        workdir = clip_workdir() if self.workdir_root is None else Path(tempfile.mkdtemp(prefix="clip-",
                                                                                         dir=self.workdir_root))
        started = time.monotonic()
        try:
            report = progress_reporter(progress, f"Finding the {self.words[1]}", self.turns)
            result = segment_clip(self.engine, source, workdir, threshold, opacity, parse_colour(colour),
                                  progress=report)
        except ClipError as error:
            shutil.rmtree(workdir, ignore_errors=True)
            logger.info("Refused a clip: %s", error)
            raise gr.Error(str(error), print_exception=False) from error
        except Exception as error:  # a broken file can fail deep in the decoder: a message, never a traceback
            shutil.rmtree(workdir, ignore_errors=True)
            logger.exception("A clip failed")
            raise gr.Error(COULD_NOT_PROCESS, print_exception=False) from error
        self.forget(session)  # only now: a failed clip leaves the previous one as it was
        new_session = ClipSession(workdir, result.state)
        self._keep(new_session)
        return new_session, *self._outputs(new_session, result, threshold, time.monotonic() - started)

    def rerender(self, session, shown_clip, threshold, opacity, colour, progress=gr.Progress()):
        """The kept clip drawn again at the sliders' new values: no network."""
        threshold, opacity = unit_interval(threshold, "threshold"), unit_interval(opacity, "opacity")
        if not isinstance(session, ClipSession) or not session.kept:
            if shown_clip is not None:  # a clip is on the page, but its probabilities are gone
                raise gr.Error(CLIP_GONE, print_exception=False)
            return (gr.skip(),) * 5  # no clip yet: the sliders only set what the next clip is drawn with
        report = progress_reporter(progress, "Redrawing", self.turns)
        previous = set(session.workdir.glob("*.mp4"))
        try:
            result = render_clip(session.clip, session.workdir, threshold, opacity, parse_colour(colour),
                                 progress=report)
        except ClipError as error:
            raise gr.Error(str(error), print_exception=False) from error
        except OSError as error:  # its files went mid-redraw (the session expired, or was evicted)
            logger.info("A redraw lost its clip: %s", error)
            raise gr.Error(CLIP_GONE, print_exception=False) from error
        for old in previous - {Path(result.video)}:  # the browser has its own copy (Gradio's cache)
            old.unlink(missing_ok=True)
        return self._outputs(session, result, threshold, None)


@dataclass(frozen=True)
class ClipComponents:
    """The video tab's components that events read or write."""

    clip: gr.Video  # the upload / webcam box
    result: gr.Video  # the drawn clip (`playable_video`)
    result_text: gr.Markdown
    notice: gr.Markdown
    plot: gr.LinePlot
    downloads: gr.File
    threshold: gr.Slider
    opacity: gr.Slider
    colour: gr.ColorPicker
    state: gr.State  # the session's ClipSession

    @property
    def sliders(self) -> list:
        return [self.threshold, self.opacity, self.colour]

    @property
    def result_outputs(self) -> list:
        return [self.result, self.plot, self.result_text, self.notice, self.downloads]


def build_clip_tab(bundle: Bundle, default_threshold: float, forget_clip: Callable[[object], None],
                   max_seconds: float | None = MAX_SECONDS) -> ClipComponents:
    """The video tab's components, within the open gr.Tab. `forget_clip` runs when a session's clip expires."""
    singular, plural_words = class_words(bundle.config)
    limit = f" The first {max_seconds:.0f} s of a longer clip are processed." if max_seconds else ""
    gr.Markdown(
        f"# Find the {plural_words} in a dashcam clip\n"
        f"Upload a dashcam or phone clip (mp4, webm, mov), or record one: every {singular} pixel of every frame is "
        f"marked in magenta, and the clip comes back to play or download, with a plot of the {plural_words} over "
        f"time. The network runs once per clip, which takes a while (the bar shows how long); moving a slider "
        f"then redraws the clip without it, which is quicker.{limit}"
    )
    with gr.Row():
        with gr.Column(scale=1, min_width=240):
            # The events take the raw upload (preprocess=False): gr.Video would otherwise run ffmpeg on it.
            clip = gr.Video(label="Your clip", sources=["upload", "webcam"], height=220, elem_id="clip")
        with gr.Column(scale=3, min_width=320):
            with gr.Group(elem_id="clip-result-panel"):
                notice = gr.Markdown(visible=False, elem_id="clip-notice", padding=True)
                result = playable_video(label=f"Your clip with its {plural_words}", interactive=False,
                                        buttons=["download"], loop=False,
                                        elem_id="clip-result")
                result_text = gr.Markdown(f"Upload a clip to see its {plural_words}.", elem_id="clip-coverage",
                                          padding=True)
            plot = gr.LinePlot(x="seconds", y="percent", title=f"{capitalised(plural_words)} over time",
                               x_title="Time in the clip (s)", y_title=f"% of the picture that is {singular}",
                               height=220, elem_id="clip-plot")
            with gr.Accordion("Downloads: the drawn clip (mp4) and the share per frame (CSV)", open=False,
                              elem_id="clip-downloads-section"):
                downloads = gr.File(label="Downloads", file_count="multiple", interactive=False,
                                    elem_id="clip-downloads")
        with gr.Column(scale=1, min_width=240):
            threshold = gr.Slider(
                0.0, 1.0, value=default_threshold, step=0.01, label="Threshold",
                info=f"Lower finds more {plural_words} and more false alarms; higher, fewer of both. It starts at "
                     f"the threshold chosen on {threshold_chosen_on(bundle.config)}. The clip is redrawn when "
                     "you let go.", elem_id="clip-threshold",
            )
            opacity = gr.Slider(0.0, 1.0, value=DEFAULT_OPACITY, step=0.05, label="Fill opacity",
                                info="The outline stays at any opacity.", elem_id="clip-opacity")
            colour = gr.ColorPicker(hex_colour(CAR_COLOUR), label="Colour", elem_id="clip-colour")
    state = gr.State(None, time_to_live=CLIP_TIME_TO_LIVE_S, delete_callback=forget_clip)
    return ClipComponents(clip, result, result_text, notice, plot, downloads, threshold, opacity, colour, state)


def wire_clip_events(tab: ClipComponents, handlers: ClipPageHandlers) -> None:
    """Connect the video tab's events to their handlers, within the open gr.Blocks.

    Processing and redrawing share one concurrency id apart from the photo's "network", so a photo
    is never queued behind a clip; a redraw re-encodes the whole clip, so it waits for a slider's
    release (or the colour picker's, or Enter in its text box) rather than following every step of a drag.
    """
    processed = tab.clip.change(
        handlers.process, inputs=[tab.clip, tab.state, *tab.sliders], outputs=[tab.state, *tab.result_outputs],
        preprocess=False, concurrency_id="clip", concurrency_limit=1, trigger_mode="always_last",
        show_progress_on=[tab.result], api_name="process_clip", api_visibility="private",
    )
    processed.success(None, js=SHOW_CLIP_RESULT_JS)  # in the browser only
    gr.on(
        [tab.threshold.release, tab.opacity.release, tab.colour.release, tab.colour.submit], handlers.rerender,
        inputs=[tab.state, tab.result, *tab.sliders], outputs=tab.result_outputs, preprocess=False,
        concurrency_id="clip", trigger_mode="always_last", show_progress_on=[tab.result],
        api_name="redraw_clip", api_visibility="private",
    )
