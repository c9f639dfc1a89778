"""The clip engine (demo.video): every kind of clip in, an H.264 mp4 with the class drawn out, or a clear
ClipError. Clips are written in each test from the CamVid fixture frames; the engines are stand-ins
(tests/clip_helpers.py) that answer at once, so what is checked is the clip handling, not a network."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from clip_helpers import KINDS, BlankEngine, RedEngine, camvid_clip, camvid_frames, decoded, write_clip
from demo import video
from demo.temporal import ProbabilitySmoother
from demo.video import ClipError, probe_clip, render_clip, segment_clip

MAGENTA = (255, 0, 255)


def mean_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.mean(np.abs(first.astype(np.int16) - second.astype(np.int16))))


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_of_clip_comes_out_as_browser_ready_h264_mp4_frame_for_frame(kind, tmp_path, workdir):
    extension, codec = KINDS[kind]
    source = camvid_clip(tmp_path / f"clip.{extension}", 12, codec=codec)
    result = segment_clip(BlankEngine(), source, workdir, 0.5, 0.4, MAGENTA)

    frames, times, facts = decoded(result.video)
    assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "width": 480, "height": 360}
    data = result.video.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "faststart: the index comes first, so playback starts at once"
    assert len(frames) == len(result.coverage) == len(result.frame_times) == 12
    assert result.frame_times == pytest.approx([index / 10 for index in range(12)])
    assert times == pytest.approx(result.frame_times, abs=1e-3)
    # Nothing found: each frame comes out as it went in (up to two lossy encodings).
    originals = camvid_frames()
    for index, frame in enumerate(frames):
        assert mean_difference(frame, originals[(index // 2) % 6]) < 6
    assert result.info.codec == {"libx264": "h264", "libx265": "hevc", "libvpx-vp9": "vp9"}[codec]
    assert result.notice is None


def test_each_overlay_matches_its_own_frame_through_the_smoothing(tmp_path, workdir):
    # Frame i is red in its top i/8: a coverage off by one frame would be off by 12.5%.
    frames = []
    for index in range(8):
        frame = np.zeros((360, 480, 3), np.uint8)
        frame[:45 * index, :, 0] = 255
        frames.append(frame)
    source = write_clip(tmp_path / "rising.mp4", frames)
    engine = RedEngine()
    result = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA, smoother=ProbabilitySmoother(3))

    # A row red in frame i is red in frame i+1 too: 2 of the 3 frames averaged, above the threshold.
    assert result.coverage[1:-1] == pytest.approx([12.5 * index for index in range(1, 7)], abs=1.5)
    assert len(engine.fed) == 8
    drawn = decoded(result.video)[0]
    # The outline is drawn at the red region's edge, in its own frame.
    # (The outline's 2 rows hold blue 255; its neighbours, 102 (tinted) and 0, blur into them a little.)
    assert drawn[3][45 * 3 - 2:45 * 3, 240, 2].min() > 140, "magenta at frame 3's edge"
    assert drawn[3][45 * 4 + 20, 240, 2] < 60, "frame 4's red rows are not drawn on frame 3"


@pytest.mark.parametrize("fps, stride", [(5, 1), (10, 1), (15, 2), (24, 2), (25, 2), (29.97, 3), (30, 3),
                                         (60, 3), (240, 3), (0, 1)])
def test_the_network_sees_a_frame_every_tenth_of_a_second(fps, stride):
    assert video.network_stride(fps) == stride


def test_a_30_fps_clip_runs_the_network_on_every_third_frame_and_its_answer_follows_the_pan(tmp_path, workdir):
    # A textured street (green and blue) panning 5 pixels a frame to the left, with a red block (the "car")
    # painted on it: RedEngine's answer is the red channel, so the truth of every frame is known.
    rng = np.random.default_rng(0)
    street = cv2.GaussianBlur(rng.uniform(0, 255, (360, 480 + 5 * 12, 3)), (0, 0), 3)
    street = cv2.normalize(street, None, 0, 200, cv2.NORM_MINMAX).astype(np.uint8)
    street[..., 0] = 0
    street[120:240, 200:320, 0] = 255
    frames = [np.ascontiguousarray(street[:, 5 * index:5 * index + 480]) for index in range(12)]
    source = write_clip(tmp_path / "pan.mp4", frames, fps=30)
    engine = RedEngine()
    result = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA)

    assert len(engine.fed) == 4, "frames 0, 3, 6 and 9"
    assert len(result.coverage) == len(decoded(result.video)[0]) == 12
    kept = result.state.kept_probabilities() >= 128
    for index, answer in enumerate(kept):
        truth = frames[index][::2, ::2, 0] > 128  # at the network's (RedEngine's) half resolution
        overlap = np.count_nonzero(answer & truth) / np.count_nonzero(answer | truth)
        assert overlap > 0.9, f"frame {index}"
    # Without the flow a skipped frame would show its key frame's block, 5-10 pixels to the right.
    assert np.count_nonzero(kept[2] != (frames[0][::2, ::2, 0] > 128)) > 500
    result.state.cleanup()

    left = sorted(workdir.iterdir())
    for network_every in (3, 0):
        with pytest.raises(ValueError, match="follows the motion"):
            segment_clip(RedEngine(), source, workdir, 0.5, 0.4, MAGENTA, smoother=ProbabilitySmoother(3),
                         network_every=network_every)
    assert sorted(workdir.iterdir()) == left, "a refused call leaves nothing behind"
    # A smoother that does not follow motion gets the network on every frame, whatever the frame rate.
    engine = RedEngine()
    plain = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA, smoother=ProbabilitySmoother(1))
    assert len(engine.fed) == len(plain.coverage) == 12
    plain.state.cleanup()


def test_a_threshold_move_redraws_from_the_kept_probabilities_without_the_network(tmp_path, workdir):
    source = camvid_clip(tmp_path / "clip.mp4", 12)
    engine = RedEngine()
    first = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA)
    kept = first.state.probabilities
    assert kept.stat().st_size == 12 * 180 * 240, "uint8 at the network's resolution, one per frame"

    everything = render_clip(first.state, workdir, 0.0, 0.4, MAGENTA)
    strict = render_clip(first.state, workdir, 0.9, 0.4, MAGENTA)
    assert len(engine.fed) == 12, "no network pass for a redraw"
    assert everything.coverage == [100.0] * 12
    assert all(high <= middle for high, middle in zip(strict.coverage, first.coverage))
    assert strict.coverage != first.coverage
    # The same threshold gives the first pass's clip again.
    again = render_clip(first.state, workdir, 0.5, 0.4, MAGENTA)
    assert again.coverage == first.coverage and again.frame_times == first.frame_times
    assert len({first.video, everything.video, strict.video, again.video}) == 4
    assert len(decoded(strict.video)[0]) == 12

    first.state.cleanup()
    assert not kept.exists()
    with pytest.raises(ClipError, match="expired"):
        render_clip(first.state, workdir, 0.5, 0.4, MAGENTA)


def test_a_variable_frame_rate_keeps_each_frames_time(tmp_path, workdir):
    times = [0.0, 0.1, 0.15, 0.4, 0.45, 0.9, 1.0]
    frames = camvid_frames()
    source = write_clip(tmp_path / "vfr.mp4", [frames[index % 6] for index in range(len(times))], times=times)
    result = segment_clip(BlankEngine(), source, workdir, 0.5, 0.4, MAGENTA)
    assert result.frame_times == pytest.approx(times, abs=1e-3)
    assert decoded(result.video)[1] == pytest.approx(times, abs=1e-3)
    rerendered = render_clip(result.state, workdir, 0.2, 0.4, MAGENTA)
    assert decoded(rerendered.video)[1] == pytest.approx(times, abs=1e-3)


@pytest.mark.parametrize("rotation, turn", [(90, cv2.ROTATE_90_COUNTERCLOCKWISE), (-90, cv2.ROTATE_90_CLOCKWISE),
                                            (180, cv2.ROTATE_180)])
def test_a_rotation_tag_is_applied_so_the_output_stands_as_the_clip_is_shown(rotation, turn, tmp_path, workdir):
    source = camvid_clip(tmp_path / "phone.mov", 4, rotation=rotation)
    info = probe_clip(source)
    assert info.rotation == rotation % 360
    assert (info.width, info.height) == ((480, 360) if rotation == 180 else (360, 480))

    engine = BlankEngine()
    result = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA)
    frames, _, facts = decoded(result.video)
    assert (facts["width"], facts["height"]) == (info.width, info.height)
    assert set(engine.fed) == {(info.height, info.width)}, "the network sees the frame upright"
    shown = cv2.rotate(camvid_frames()[0], turn)
    assert mean_difference(frames[0], shown) < 6
    assert mean_difference(frames[0], cv2.rotate(shown, cv2.ROTATE_180)) > 20


def test_an_odd_sized_clip_loses_one_row_and_column(tmp_path, workdir):
    # yuv444p: the only way to store an odd size in H.264.
    source = camvid_clip(tmp_path / "odd.mp4", 4, size=(481, 361), pix_fmt="yuv444p")
    assert (probe_clip(source).width, probe_clip(source).height) == (481, 361)
    engine = BlankEngine()
    result = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA)
    frames, _, facts = decoded(result.video)
    assert (facts["width"], facts["height"]) == (480, 360)
    expected = np.asarray(Image.fromarray(camvid_frames()[0]).resize((481, 361)))[:360, :480]
    assert mean_difference(frames[0], expected) < 6, "cropped, not stretched"


@pytest.mark.parametrize("size, expected", [((3840, 2160), (1280, 720)), ((7680, 4320), (1280, 720))])
def test_a_huge_frame_is_scaled_down_before_the_network_and_the_drawing(size, expected, tmp_path, workdir):
    source = camvid_clip(tmp_path / "huge.mp4", 2, size=size)
    engine = BlankEngine()
    result = segment_clip(engine, source, workdir, 0.5, 0.4, MAGENTA)
    facts = decoded(result.video)[2]
    assert (facts["width"], facts["height"]) == expected
    assert set(engine.fed) == {expected[::-1]}
    assert (result.info.width, result.info.height) == size


def test_a_long_clip_is_processed_from_its_start_with_a_notice(tmp_path, workdir, monkeypatch):
    source = camvid_clip(tmp_path / "long.mp4", 30)  # 3 s at 10 fps
    monkeypatch.setattr(video, "MAX_SECONDS", 1.0)
    result = segment_clip(BlankEngine(), source, workdir, 0.5, 0.4, MAGENTA)
    assert len(result.coverage) == 10 and len(decoded(result.video)[0]) == 10
    assert result.notice.startswith("Only the first 1.0 s (10 frames) of this 3.0 s clip were processed")

    monkeypatch.setattr(video, "MAX_SECONDS", 60.0)
    monkeypatch.setattr(video, "MAX_FRAMES", 7)
    result = segment_clip(BlankEngine(), source, workdir, 0.5, 0.4, MAGENTA)
    assert len(result.coverage) == 7 and "7 frames" in result.notice


def audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for index in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, index * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def zero_frames(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libvpx-vp9", rate=10)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        container.start_encoding()
    return path


def cut_in_half(path):
    source = camvid_clip(path.with_suffix(".whole.mp4"), 20)  # FFmpeg writes the index at the end
    path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    return path


def larger_than_8k(path):
    return write_clip(path, [np.zeros((4320, 8192, 3), np.uint8)])


BAD_CLIPS = {
    "text file": (lambda path: path.with_suffix(".txt").write_text("not a video\n" * 50) and path.with_suffix(".txt"),
                  "not a video the app can read"),
    "JPEG photo": (lambda path: Image.fromarray(camvid_frames()[0]).save(path.with_suffix(".jpg")) or path.with_suffix(".jpg"),
                   "still picture, not a video"),
    "audio only": (lambda path: audio_only(path.with_suffix(".m4a")), "no video track"),
    "zero frames": (lambda path: zero_frames(path.with_suffix(".webm")), "empty: it has no frames"),
    "truncated mp4": (lambda path: cut_in_half(path.with_suffix(".mp4")), "damaged or cut short"),
    "larger than 8K": (lambda path: larger_than_8k(path.with_suffix(".mp4")), "larger than 8K"),
}


@pytest.mark.parametrize("case", BAD_CLIPS)
def test_a_bad_clip_gets_a_clear_message_and_leaves_nothing_behind(case, tmp_path, workdir):
    make, message = BAD_CLIPS[case]
    path = make(tmp_path / "upload")
    engine = RedEngine()
    with pytest.raises(ClipError, match=message):
        segment_clip(engine, path, workdir, 0.5, 0.4, MAGENTA)
    assert not engine.fed
    assert not list(workdir.iterdir())


def test_a_clip_cut_short_after_its_index_keeps_its_frames_and_says_so(tmp_path, workdir):
    import av

    whole = tmp_path / "whole.mp4"
    with av.open(str(whole), "w", container_options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        for rgb in camvid_frames() * 5:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    result = segment_clip(BlankEngine(), cut, workdir, 0.5, 0.4, MAGENTA)
    assert 0 < len(result.coverage) < 30
    assert len(decoded(result.video)[0]) == len(result.coverage)
    assert "damaged or cut short after" in result.notice


def test_a_failure_mid_clip_removes_every_file(tmp_path, workdir):
    class FailingEngine(RedEngine):
        def network_probabilities(self, rgb):
            if len(self.fed) == 5:
                raise RuntimeError("the network failed")
            return super().network_probabilities(rgb)

    source = camvid_clip(tmp_path / "clip.mp4", 12)
    with pytest.raises(RuntimeError, match="the network failed"):
        segment_clip(FailingEngine(), source, workdir, 0.5, 0.4, MAGENTA)
    assert not list(workdir.iterdir())


def test_the_real_network_finds_cars_in_a_clip(tiny_bundle, tmp_path, workdir):
    from demo.engine import SegmentationEngine

    engine = SegmentationEngine(tiny_bundle.model, tiny_bundle.config)
    source = camvid_clip(tmp_path / "clip.mp4", 4)
    result = segment_clip(engine, source, workdir, 0.0, 0.4, MAGENTA)
    assert result.coverage == [100.0] * 4, "threshold 0: every pixel"
    assert result.state.probability_shape == (180, 240), "kept at the tiny network's resolution"
