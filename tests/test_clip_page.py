"""The video tab's handlers (demo.clip_page) on a small clip made from the CamVid fixture frames, with the
tiny bundle: one network pass per clip, redraws without it, files deleted when a clip goes, clear
messages for bad clips, no ffmpeg anywhere, and photos first while a clip is processed."""
from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from gradio.utils import get_upload_folder

from clip_helpers import camvid_clip

FRAMES = 12


def as_upload(path: Path) -> dict:
    """`path` copied into Gradio's upload folder, as the raw FileData an upload event receives."""
    folder = Path(get_upload_folder()) / f"test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    target = folder / path.name
    target.write_bytes(path.read_bytes())
    return {"path": str(target), "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}


def no_progress(*args, **kwargs):
    pass


class CountingEngine:
    """The engine, counting its network passes."""

    def __init__(self, engine):
        self.engine, self.passes = engine, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def network_probabilities(self, rgb):
        self.passes += 1
        return self.engine.network_probabilities(rgb)


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    from demo.engine import SegmentationEngine

    return SegmentationEngine(tiny_bundle.model, tiny_bundle.config)


@pytest.fixture
def handlers(engine, tiny_bundle, tmp_path):
    from demo.clip_page import ClipPageHandlers

    return ClipPageHandlers(CountingEngine(engine), tiny_bundle, workdir_root=tmp_path)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return camvid_clip(tmp_path_factory.mktemp("clips") / "drive.mp4", FRAMES)


def test_a_clip_runs_the_network_once_per_frame_and_a_redraw_never(handlers, clip):
    from demo.clip_page import ClipSession

    session, video, table, text, notice, downloads = handlers.process(as_upload(clip), None, 0.5, 0.4, "#ff00ff",
                                                                      progress=no_progress)
    assert isinstance(session, ClipSession)
    assert handlers.engine.passes == FRAMES
    assert Path(video).is_file() and Path(video).suffix == ".mp4"
    assert len(table) == FRAMES and list(table.columns) == ["seconds", "percent"]
    assert table["seconds"].is_monotonic_increasing
    assert "At threshold 0.50" in text and f"{FRAMES} frames" in text
    assert [Path(path).suffix for path in downloads] == [".mp4", ".csv"]
    assert len(Path(downloads[1]).read_text().splitlines()) == FRAMES + 1

    # Threshold 0: every pixel is the class, so every frame is 100%; no network pass, and a new file.
    video_again, table_again, text_again, _, _ = handlers.rerender(session, {"path": video}, 0.0, 0.4, "#00ff00",
                                                                   progress=no_progress)
    assert handlers.engine.passes == FRAMES
    assert video_again != video and Path(video_again).is_file()
    assert not Path(video).exists(), "the previous drawing is deleted"
    assert (table_again["percent"] == 100).all()
    assert "At threshold 0.00" in text_again


def test_a_new_clip_replaces_the_old_one_and_forgetting_deletes_its_files(handlers, clip):
    first = handlers.process(as_upload(clip), None, 0.5, 0.4, "#ff00ff", progress=no_progress)[0]
    second = handlers.process(as_upload(clip), first, 0.5, 0.4, "#ff00ff", progress=no_progress)[0]
    assert not first.workdir.exists() and not first.kept
    assert second.workdir.exists()
    # A redraw of a clip no longer kept says so, rather than failing or showing nothing.
    with pytest.raises(gr.Error, match="no longer keeps this clip"):
        handlers.rerender(first, {"path": "shown.mp4"}, 0.5, 0.4, "#ff00ff", progress=no_progress)
    handlers.forget(second)  # the session's state expired
    assert not second.workdir.exists()


def test_only_the_most_recent_clips_are_kept(engine, tiny_bundle, tmp_path):
    from demo.clip_page import ClipPageHandlers

    handlers = ClipPageHandlers(engine, tiny_bundle, workdir_root=tmp_path, max_kept=2)
    short = camvid_clip(tmp_path / "short.mp4", 3)
    sessions = [handlers.process(as_upload(short), None, 0.5, 0.4, "#ff00ff", progress=no_progress)[0]
                for _ in range(3)]
    assert [session.kept for session in sessions] == [False, True, True]
    assert not sessions[0].workdir.exists()


@pytest.mark.parametrize("content, name", [(b"this is a text file\n", "holiday.mp4"), (b"", "empty.webm")])
def test_a_file_that_is_not_a_clip_gets_a_clear_message_and_leaves_nothing(handlers, tmp_path, content, name):
    fake = tmp_path / name
    fake.write_bytes(content)
    with pytest.raises(gr.Error) as refused:
        handlers.process(as_upload(fake), None, 0.5, 0.4, "#ff00ff", progress=no_progress)
    assert "Traceback" not in str(refused.value.message) and len(refused.value.message) > 10
    assert not list(tmp_path.glob("clip-*")), "its working folder is deleted"


def test_a_path_outside_the_uploads_is_refused(handlers, clip):
    with pytest.raises(gr.Error, match="not among this app's uploads"):
        handlers.process({"path": str(clip)}, None, 0.5, 0.4, "#ff00ff", progress=no_progress)


def test_sliders_without_a_clip_change_nothing_and_bad_values_get_a_message(handlers):
    assert handlers.rerender(None, None, 0.3, 0.4, "#ff00ff", progress=no_progress) == (gr.skip(),) * 5
    with pytest.raises(gr.Error, match="threshold must be a number from 0 to 1"):
        handlers.rerender(None, None, "abc", 0.4, "#ff00ff", progress=no_progress)


def test_the_drawn_clip_reaches_the_browser_without_ffprobe_or_ffmpeg(monkeypatch, tmp_path):
    """On Spaces ffmpeg is installed, and gr.Video would probe (and maybe re-encode) every clip it sends."""
    from gradio import processing_utils

    from demo.clip_page import playable_video

    def forbidden(*args, **kwargs):
        raise AssertionError("ffmpeg or ffprobe was called")

    monkeypatch.setattr(processing_utils, "ffmpeg_installed", lambda: True)
    monkeypatch.setattr(processing_utils, "video_is_playable", forbidden)
    monkeypatch.setattr("gradio.components.video.FFmpeg", forbidden)
    video = tmp_path / "cars.mp4"
    video.write_bytes(b"mp4")
    assert playable_video().postprocess(video).path == str(video)
    assert playable_video().postprocess(None) is None
    with pytest.raises(AssertionError):  # the check above can fail: gr.Video itself would call them
        gr.Video().postprocess(str(video))


def test_the_clip_events_take_the_raw_upload_and_their_own_queue(tiny_bundle):
    from demo.ui import build_demo

    events = {event.api_name: event for event in build_demo(tiny_bundle).fns.values()}
    process, redraw = events["process_clip"], events["redraw_clip"]
    assert process.concurrency_id != events["run_network"].concurrency_id
    assert redraw.concurrency_id == process.concurrency_id and process.concurrency_limit == 1
    assert not process.preprocess, "gr.Video's preprocess runs ffmpeg on some clips"


def test_a_clip_waits_between_frames_while_a_photo_is_segmented():
    from demo.clip_page import PhotosFirst

    photo_started, photo_may_end = threading.Event(), threading.Event()
    order = []

    class SlowEngine:
        def network_probabilities(self, rgb, most_pixels=None):
            if rgb == "photo":
                photo_started.set()
                photo_may_end.wait(5)
            order.append(rgb)
            return rgb

    turns = PhotosFirst(SlowEngine())
    photo = threading.Thread(target=turns.photo_engine.network_probabilities, args=("photo",))
    photo.start()
    photo_started.wait(5)
    frame = threading.Thread(target=turns.clip_engine.network_probabilities, args=("frame",))
    frame.start()
    time.sleep(0.2)
    assert order == [], "the clip's frame waits for the photo"
    photo_may_end.set()
    photo.join(5)
    frame.join(5)
    assert order == ["photo", "frame"]


def test_photos_taken_in_turn_keep_their_larger_feed(engine):
    from demo.clip_page import PhotosFirst
    from demo.engine import PHOTO_FEED_PIXELS

    # A photo twice the training frames' sides is fed larger than they are (PHOTO_FEED_PIXELS) on either side.
    photo = np.random.default_rng(0).integers(0, 256, (2 * engine.config.input_size[0],
                                                       2 * engine.config.input_size[1], 3), np.uint8)
    turns = PhotosFirst(engine)
    for side in (turns.photo_engine, turns.clip_engine):
        fed = side.network_probabilities(photo, PHOTO_FEED_PIXELS)
        assert fed.shape == engine.network_probabilities(photo, PHOTO_FEED_PIXELS).shape
        assert fed.shape[0] > engine.config.input_size[0]
