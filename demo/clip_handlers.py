"""The API's /segment_video: a clip in, the clip with the class drawn on every frame out (demo.video).

Clips run one at a time in a queue of their own (concurrency id "clip"), so a photo never waits behind a
clip. The overlaid clip is written in a folder of its own inside Gradio's upload folder, where Gradio
serves it as it is (an H.264 mp4 needs no conversion, so no system ffmpeg is called) and the app's sweeper
deletes it an hour after it was last used.
"""
from __future__ import annotations

import logging
import secrets
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder

from demo.engine import SegmentationEngine
from demo.handlers import CAR_COLOUR, DEFAULT_OPACITY
from demo.safeguards import unit_interval, uploaded_file
from demo.video import MAX_FRAMES, MAX_SECONDS, ClipError, ClipResult, segment_clip

logger = logging.getLogger(__name__)
CLIP_CONCURRENCY = 1  # a clip's network pass already spreads over every core
COULD_NOT_PROCESS = "The app could not process this video; please try another clip (MP4, MOV or WebM)."


def clip_workdir() -> Path:
    """A new folder for one clip's files, inside Gradio's upload folder (served and swept like its uploads)."""
    folder = Path(get_upload_folder()) / f"clip-{secrets.token_hex(16)}"
    folder.mkdir(parents=True)
    return folder


def coverage_table(result: ClipResult) -> list[dict]:
    """Each frame's time and the share of its pixels found to be the class, as the API returns them."""
    return [{"time_s": round(time, 3), "coverage_percent": round(coverage, 2)}
            for time, coverage in zip(result.frame_times, result.coverage)]


def read_clip_upload(upload) -> Path:
    """The uploaded clip's path (raw FileData, checked as photos are), or a gr.Error the user can act on."""
    if upload is None:
        raise gr.Error("Please upload a video clip first.", print_exception=False)
    return uploaded_file(upload)


class ClipHandlers:
    """The clip events for one engine; `words` are the class's (`demo.model_facts.class_words`)."""

    def __init__(self, engine: SegmentationEngine, words: tuple[str, str]):
        self.engine, self.words = engine, words

    def run_clip(self, source: Path, threshold: float, opacity: float, colour: tuple[int, int, int],
                 progress=None) -> ClipResult:
        """`segment_clip` in a new work folder, with any failure turned into a message for the user."""
        workdir = clip_workdir()
        try:
            return segment_clip(self.engine, source, workdir, threshold, opacity, colour, progress)
        except ClipError as error:
            logger.info("Refused a clip: %s", error)
            raise gr.Error(str(error), print_exception=False) from error
        except Exception as error:  # an FFmpeg failure not foreseen: a message, never a traceback
            logger.exception("A clip failed.")
            raise gr.Error(COULD_NOT_PROCESS, print_exception=False) from error
        finally:
            if not any(workdir.iterdir()):
                workdir.rmdir()

    def segment_video_description(self) -> str:
        singular, plural_words = self.words
        return (f"Find the {plural_words} in a video clip (MP4, MOV or WebM; the first {MAX_SECONDS:.0f} s, at most "
                f"{MAX_FRAMES} frames). Returns the clip with {singular} pixels tinted and outlined in magenta "
                f'(H.264 MP4) and {{"notice", "frames": [{{"time_s", "coverage_percent"}}, ...]}}, one entry per '
                f"frame; the notice says when only part of the clip was processed.")

    def segment_video(self, video: dict | None, threshold=None, progress=gr.Progress()):
        """The API's /segment_video: (overlaid clip, {"notice", "frames": coverage per frame}).
        `threshold`: from 0 to 1, the model's own if left out."""
        threshold = self.engine.default_threshold if threshold is None else unit_interval(threshold, "threshold")
        source = read_clip_upload(video)

        def report(done: int, total: int | None) -> None:
            progress((done, total), desc="Finding them in each frame", unit="frames")

        result = self.run_clip(source, threshold, DEFAULT_OPACITY, CAR_COLOUR, report)
        result.state.cleanup()  # an API call is never redrawn: the kept probabilities go at once
        if result.notice:
            gr.Warning(result.notice)
        return str(result.video), {"notice": result.notice, "frames": coverage_table(result)}


def wire_clip_api(handlers: ClipHandlers, default_threshold: float) -> None:
    """/segment_video, within the open gr.Blocks: API only, on components of its own kept off the page."""
    video_in = gr.Video(visible=False, label="Video clip")
    threshold_in = gr.Slider(0.0, 1.0, value=default_threshold, visible=False, label="Threshold")
    video_out = gr.Video(visible=False, label="Clip with the class drawn")  # format None: never converted
    coverage_out = gr.JSON(visible=False, label="Coverage per frame")
    gr.on(
        [], handlers.segment_video, inputs=[video_in, threshold_in], outputs=[video_out, coverage_out],
        preprocess=False, concurrency_id="clip", concurrency_limit=CLIP_CONCURRENCY, api_name="segment_video",
        api_description=handlers.segment_video_description(),
    )
