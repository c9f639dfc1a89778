"""/segment_video over HTTP, as API clients call it with gradio_client (the clip engine: test_video.py)."""
from __future__ import annotations

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from clip_helpers import camvid_clip, decoded
from demo.ui import build_demo


@pytest.fixture(scope="module")
def app(launch_app, tiny_bundle):
    demo = build_demo(tiny_bundle)
    return demo, Client(launch_app(demo), verbose=False)


def segment_video(client, path, *threshold):
    return client.predict(handle_file(str(path)), *threshold, api_name="/segment_video")


def test_segment_video_returns_the_overlaid_clip_and_coverage_per_frame(app, tmp_path):
    _, client = app
    source = camvid_clip(tmp_path / "dashcam.mp4", 6)
    drawn, coverage = segment_video(client, source, 0.0)

    frames, times, facts = decoded(drawn)
    assert drawn.endswith(".mp4")
    assert facts == {"codec": "h264", "pix_fmt": "yuv420p", "width": 480, "height": 360}
    assert len(frames) == 6
    assert coverage["notice"] is None
    assert coverage["frames"] == [{"time_s": pytest.approx(time, abs=1e-3), "coverage_percent": 100.0}
                                  for time in times], "threshold 0: every pixel, in every frame"


def test_the_threshold_may_be_left_out(app, tmp_path, tiny_bundle):
    _, client = app
    source = camvid_clip(tmp_path / "dashcam.webm", 4, codec="libvpx-vp9")
    default = segment_video(client, source)[1]["frames"]
    strict = segment_video(client, source, 1.0)[1]["frames"]
    assert len(default) == len(strict) == 4
    assert all(0 < frame["coverage_percent"] < 100 for frame in default), "the tiny model's 0.5 splits the pixels"
    assert all(frame["coverage_percent"] <= 1 for frame in strict)


@pytest.mark.parametrize("content, message", [(b"not a video\n" * 40, "not a video the app can read"),
                                              (b"", "empty")])
def test_a_bad_file_gets_its_message(app, tmp_path, content, message):
    _, client = app
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    with pytest.raises(AppError, match=message):
        segment_video(client, path, 0.5)


def test_a_bad_threshold_gets_its_message(app, tmp_path):
    _, client = app
    with pytest.raises(AppError, match="threshold must be a number from 0 to 1"):
        segment_video(client, camvid_clip(tmp_path / "clip.mp4", 2), 7)


def test_clips_queue_apart_from_photos_one_at_a_time(app):
    demo, client = app
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/segment_video"]
    assert [parameter["parameter_name"] for parameter in endpoint["parameters"]] == ["video", "threshold"]
    assert endpoint["parameters"][1]["parameter_has_default"]
    assert [output["component"] for output in endpoint["returns"]] == ["Video", "Json"]
    clip, photo = (next(fn for fn in demo.fns.values() if fn.api_name == name) for name in ("segment_video", "segment"))
    assert (clip.concurrency_id, clip.concurrency_limit) == ("clip", 1)
    assert photo.concurrency_id != clip.concurrency_id


def test_a_clip_past_the_limit_comes_back_cut_with_its_notice(app, tmp_path, monkeypatch):
    from demo import video

    _, client = app
    monkeypatch.setattr(video, "MAX_FRAMES", 3)  # the app runs in this process
    drawn, coverage = segment_video(client, camvid_clip(tmp_path / "long.mp4", 6), 0.5)
    assert len(decoded(drawn)[0]) == len(coverage["frames"]) == 3
    assert coverage["notice"].startswith("Only the first 0.3 s (3 frames) of this 0.6 s clip were processed")
