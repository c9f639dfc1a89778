"""A photo's /segment latency while another visitor's clip is processed, against an idle app.

    python -m bench.clip_contention                    # the shipped model, a CamVid drive as the clip
    python -m bench.clip_contention --quick            # the fixtures' frames: checks the script runs

The app is built in this process (`demo.ui.build_demo`) and asked over loopback: photos through
gradio_client's /segment, the clip through the page's own queue requests (its event is not in the API),
as a browser sends them. Each serving setting is measured side by side in one run: photos on the idle
app, then photos sent every `--gap` seconds while a clip is processed, with `PhotosFirst` (a clip pauses
between frames while a photo's pass runs) and without it (the clip's and the photo's passes share the
cores). The clip's own time, alone and with the photos, says what the photos cost it.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import numpy as np  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
CAMVID_DIR = Path(os.environ.get("CAMVID_DIR", REPO_ROOT.parent / "shared" / "data" / "camvid"))
FIXTURE_CAMVID_DIR = REPO_ROOT / "tests" / "fixtures" / "camvid"
DEFAULT_MODEL = REPO_ROOT / "demo" / "default_model"
# CamVid's 0016E5 validation frames are every other frame of a 30 fps drive.
CAMVID_FPS = 15
TARGET_RATIO = 3.0  # a photo during a clip should take at most this many times its idle time


def camvid_frames(camvid_dir: Path) -> list[Path]:
    """The longest run of consecutive frames of one drive in the folder's val split (else its train split)."""
    for split in ("val", "train"):
        frames = sorted((camvid_dir / split).glob("*.png"))
        if frames:
            drives: dict[str, list[Path]] = {}
            for frame in frames:
                drives.setdefault(frame.name.split("_")[0], []).append(frame)
            return max(drives.values(), key=len)
    raise SystemExit(f"No CamVid frames in {camvid_dir}")


def write_clip(frames: list[Path], path: Path, seconds: float, fps: int = CAMVID_FPS) -> Path:
    """An H.264 mp4 of `frames` in order, back and forth (so the drive never jumps), `seconds` long."""
    import av
    from PIL import Image

    pictures = [np.asarray(Image.open(frame).convert("RGB")) for frame in frames]
    order = pictures + pictures[-2:0:-1] if len(pictures) > 2 else pictures
    height, width = pictures[0].shape[:2]
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(max(1, round(seconds * fps))):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(order[index % len(order)], format="rgb24")))
        container.mux(stream.encode())
    return path


class PageSession:
    """One browser session's requests to the page's queue: upload a file, call an event, await its end."""

    def __init__(self, url: str, config: dict):
        import httpx

        self.url, self.http = url.rstrip("/"), httpx.Client(timeout=600)
        self.session_hash = os.urandom(8).hex()
        self.fn_index = {event["api_name"]: event["id"] for event in config["dependencies"]}

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as file:
            answer = self.http.post(f"{self.url}/gradio_api/upload", files={"files": (path.name, file)})
        answer.raise_for_status()
        return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, api_name: str, data: list) -> dict:
        """Run the page's event `api_name` with `data` and return its completion message."""
        joined = self.http.post(f"{self.url}/gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn_index[api_name], "session_hash": self.session_hash,
            "event_data": None, "trigger_id": None})
        joined.raise_for_status()
        with self.http.stream("GET", f"{self.url}/gradio_api/queue/data",
                              params={"session_hash": self.session_hash}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    message = json.loads(line[5:])
                    if message.get("msg") == "process_completed":
                        if not message.get("success"):
                            raise RuntimeError(f"{api_name} failed: {message.get('output')}")
                        return message
        raise RuntimeError(f"{api_name}: the stream ended before the event did")


def photo_latencies(client, photo: Path, count: int | None, gap_s: float, until: threading.Event | None = None):
    """Seconds of /segment calls, one every `gap_s` after the last answer: `count` of them, or until `until`."""
    from gradio_client import handle_file

    seconds = []
    while (count is None or len(seconds) < count) and not (until is not None and until.is_set()):
        started = time.perf_counter()
        client.predict(handle_file(str(photo)), 0.5, api_name="/segment")
        seconds.append(time.perf_counter() - started)
        time.sleep(gap_s)
    return seconds


def measure(bundle, clip: Path, photo: Path, photos_first: bool, idle_photos: int, gap_s: float) -> dict:
    """One app, built with `photos_first` or not: photos idle, the clip alone, photos during the clip, photos
    idle again (the idle times before and after together)."""
    from bench.serving import client_for

    from demo.ui import MAX_UPLOAD_SIZE, build_demo

    demo = build_demo(bundle, photos_first=photos_first)
    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            max_file_size=MAX_UPLOAD_SIZE)
    downloads = tempfile.TemporaryDirectory(prefix="clip-contention-downloads-")
    try:
        # As a careful caller: one TLS context for all its calls (a new one per call costs ~190 ms, section 7).
        client = client_for(url, Path(downloads.name))
        photo_latencies(client, photo, 3, 0)  # warm: the first calls set up more than a photo costs
        idle = photo_latencies(client, photo, idle_photos, gap_s)

        import httpx

        config = httpx.get(f"{url}config", timeout=30).json()
        visitor = PageSession(url, config)
        clip_input = [visitor.upload(clip), None, 0.5, 0.4, "#ff00ff"]
        started = time.perf_counter()
        visitor.call("process_clip", clip_input)
        clip_alone_s = time.perf_counter() - started

        done, timing = threading.Event(), {}

        def process_clip():
            started = time.perf_counter()
            try:
                PageSession(url, config).call("process_clip", clip_input)
            finally:
                timing["clip_s"] = time.perf_counter() - started
                done.set()

        thread = threading.Thread(target=process_clip)
        thread.start()
        time.sleep(1.0)  # the clip is under way: opened, first frames decoded
        during = photo_latencies(client, photo, None, gap_s, until=done)
        thread.join()
        # Idle again: the machine's other load drifts, so the idle time brackets the clip's.
        idle += photo_latencies(client, photo, idle_photos, gap_s)
        client.close()
    finally:
        demo.close()
        downloads.cleanup()
    return {"photos_first": photos_first, "idle_s": idle, "during_clip_s": during, "clip_alone_s": clip_alone_s,
            "clip_with_photos_s": timing["clip_s"]}


def pooled(results: list[dict], photos_first: bool) -> dict:
    """The rounds of one setting together: every photo's time, the clips' medians."""
    rounds = [result for result in results if result["photos_first"] == photos_first]
    return {"photos_first": photos_first, "rounds": len(rounds),
            "idle_s": [value for result in rounds for value in result["idle_s"]],
            "during_clip_s": [value for result in rounds for value in result["during_clip_s"]],
            "clip_alone_s": statistics.median(result["clip_alone_s"] for result in rounds),
            "clip_with_photos_s": statistics.median(result["clip_with_photos_s"] for result in rounds)}


def report(results: list[dict], clip_words: str, load: dict, gap_s: float) -> str:
    rounds = len(results) // 2
    lines = [f"Clip: {clip_words}. Photo: one 480x360 CamVid frame through gradio_client's /segment, "
             f"one every {gap_s:.1f} s after the last answer. {rounds} rounds, the two settings alternating; "
             "medians over all rounds' photos (clip times: median of the rounds).",
             f"Load average at the start: {', '.join(f'{value:.2f}' for value in load['load_average'])}; other busy "
             f"processes: {len(load['busy_processes'])} (timings taken under that contention).", "",
             "| setting | photo idle, median (ms) | photo during a clip, median (ms) | ratio | photos during | "
             "clip alone (s) | clip with photos (s) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for result in (pooled(results, True), pooled(results, False)):
        idle, during = statistics.median(result["idle_s"]), statistics.median(result["during_clip_s"])
        name = "photos first (PhotosFirst)" if result["photos_first"] else "clip and photo share the cores"
        lines.append(f"| {name} | {1000 * idle:.0f} | {1000 * during:.0f} | {during / idle:.2f}x | "
                     f"{len(result['during_clip_s'])} | {result['clip_alone_s']:.1f} | "
                     f"{result['clip_with_photos_s']:.1f} |")
    lines.append(f"\nTarget: a photo during a clip within {TARGET_RATIO:.0f}x its idle median.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the fixtures' frames, a 2 s clip, few photos")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="bundle folder (default: the shipped one)")
    parser.add_argument("--camvid", type=Path, default=CAMVID_DIR, help="CamVid folder (SegNet layout)")
    parser.add_argument("--seconds", type=float, default=None, help="clip length (default 8, quick 2)")
    parser.add_argument("--photos", type=int, default=None, help="photos on the idle app, before and after (default 10, quick 3)")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between a photo's answer and the next")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of both settings (default 2, quick 1)")
    parser.add_argument("--json", type=Path, help="also write the raw timings here")
    args = parser.parse_args(argv)
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    idle_photos = args.photos or (3 if args.quick else 10)
    camvid = FIXTURE_CAMVID_DIR if args.quick or not args.camvid.is_dir() else args.camvid

    sys.path.insert(0, str(REPO_ROOT))
    from bench.machine import other_busy_processes
    from demo.loading import load_bundle

    bundle = load_bundle(args.model)
    frames = camvid_frames(camvid)
    workdir = Path(tempfile.mkdtemp(prefix="clip-contention-"))
    clip = write_clip(frames, workdir / "drive.mp4", seconds)
    photo = frames[len(frames) // 2]
    clip_words = (f"{seconds:.0f} s at {CAMVID_FPS} fps ({round(seconds * CAMVID_FPS)} frames of "
                  f"{frames[0].name.split('_')[0]}, {camvid}), model {args.model.name}")
    load = other_busy_processes()
    results = []
    for round_index in range(args.rounds or (1 if args.quick else 2)):
        for photos_first in (True, False) if round_index % 2 == 0 else (False, True):
            results.append(measure(bundle, clip, photo, photos_first, idle_photos, args.gap))
            print(f"round {round_index + 1}, photos_first={photos_first}: done", file=sys.stderr)
    text = report(results, clip_words, load, args.gap)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"clip": clip_words, "load": load, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
