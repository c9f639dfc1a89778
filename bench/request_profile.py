"""Where one /segment request's time goes, from the caller's side and the app's, against the engine's own time.

    python -m bench.request_profile                  # 25 requests per way of calling (after 3 warm-ups)
    python -m bench.request_profile --requests 40 --output runs/request_profile.md
    python -m bench.request_profile --size 4000x3000   # the photo enlarged to a phone's 12 MP, sent as JPEG

The app runs as a Space runs it (`python app.py`, in its own process, on a free loopback port) with
Gradio's own request tracing on (GRADIO_PROFILING=1: the queue's wait, pre- and postprocessing and
the function's call, and the upload route, per request). Three ways of calling /segment take turns,
one request each per round, so a slow spell of a shared machine falls on all of them alike:

- gradio_client as its documentation shows it, `Client(url)` (as bench/serving.py called it until
  2026-12-04): every HTTP call of a request (upload, join the queue, the answer's event stream,
  two downloads) opens its own httpx client, and with `ssl_verify=True` each builds a new TLS
  context from certifi's CA bundle, even for a plain http:// address;
- gradio_client given one TLS context for all its calls (`Client(url, ssl_verify=context)`), as
  bench/serving.py's callers now are (`bench.serving.client_for`);
- plain HTTP through one kept-open httpx client: Gradio's REST route (POST /gradio_api/call/segment,
  then its event stream), which skips gradio_client's 50 ms polling of the answer's messages.

The engine's whole photo (section 1 of BENCHMARKS.md, in this process) takes its turn in every round
as well: the yardstick of the target, a request within 2x of it. Each way's rows split the caller's
time into its HTTP calls, and the app's (from Gradio's traces) into its phases; the handler's own
steps (decode, network, drawing, encoding) are timed after the app stops, in this process, on the
same photo.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "demo" / "default_model"
DEFAULT_PHOTO = REPO_ROOT / "demo" / "examples" / "0016E5_08017.png"  # bench/slider.py's PHOTO, a 480x360 frame
WARMUP_REQUESTS = 3
THRESHOLD = 0.5
PHONE_JPEG_QUALITY = 90
TARGET_RATIO = 2.0  # a request within this many times the engine's whole photo

GRADIO_CLIENT = "gradio_client, Client(url)"
SHARED_TLS = "gradio_client, one TLS context"
PLAIN_HTTP = "plain HTTP, one connection"
ENGINE = "engine's whole photo (section 1), in this process"

# Client-side phases, in the order a request goes through them.
CLIENT_PHASES = ("upload", "submit", "wait for the answer", "download 2 files")


class ClientPhases:
    """Times gradio_client's own steps while it is patched in (`recording`): each request's
    milliseconds per phase land in `current`, which the caller resets before each request."""

    def __init__(self):
        self.current: dict[str, float] = collections.defaultdict(float)

    def _timing(self, function, phase: str):
        def timed_call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.current[phase] += 1000 * (time.perf_counter() - started)
        return timed_call

    @contextlib.contextmanager
    def recording(self):
        from gradio_client import client, utils

        patched = [(client.Endpoint, "_upload_file", "upload"), (client.Client, "send_data", "submit"),
                   (utils, "get_pred_from_sse_v1plus", "wait for the answer"),
                   (client.Endpoint, "_download_file", "download 2 files")]
        originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patched]
        for owner, name, phase in patched:
            setattr(owner, name, self._timing(getattr(owner, name), phase))
        try:
            yield self
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)


class PlainHttpClient:
    """/segment through Gradio's REST routes on one kept-open connection, as `curl` would call it
    (docs/app.md): upload the photo, post the call, read its event stream, download both files."""

    def __init__(self, url: str, downloads: Path):
        import httpx

        self.url = url.rstrip("/")
        self.downloads = downloads
        self.session_hash = secrets.token_hex(8)  # so that the app's traces can tell this caller's requests
        self.http = httpx.Client(timeout=60)

    def segment(self, photo: Path, threshold: float, phases: dict[str, float]):
        import json

        def clocked(phase, action):
            started = time.perf_counter()
            result = action()
            phases[phase] += 1000 * (time.perf_counter() - started)
            return result

        def upload():
            with open(photo, "rb") as file:
                answer = self.http.post(f"{self.url}/gradio_api/upload", files=[("files", (photo.name, file))])
            answer.raise_for_status()
            return answer.json()[0]

        path = clocked("upload", upload)
        body = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, threshold],
                "session_hash": self.session_hash}

        def submit():
            answer = self.http.post(f"{self.url}/gradio_api/call/segment", json=body)
            answer.raise_for_status()
            return answer.json()["event_id"]

        event_id = clocked("submit", submit)

        def wait():
            event = None
            with self.http.stream("GET", f"{self.url}/gradio_api/call/segment/{event_id}") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event in ("complete", "error"):
                        data = json.loads(line.split(":", 1)[1])
                        if event == "error":
                            raise RuntimeError(f"/segment failed: {data}")
                        return data
            raise RuntimeError("/segment's event stream ended without an answer")

        drawn, mask, stats = clocked("wait for the answer", wait)

        def download():
            paths = []
            for picture in (drawn, mask):
                answer = self.http.get(picture.get("url") or f"{self.url}/gradio_api/file={picture['path']}")
                answer.raise_for_status()
                paths.append(self.downloads / Path(picture["path"]).name)
                paths[-1].write_bytes(answer.content)
            return paths

        return (*clocked("download 2 files", download), stats)

    def close(self):
        self.http.close()


def gradio_caller(client, recorder: ClientPhases):
    from gradio_client import handle_file

    def call(photo: Path, phases: dict[str, float]):
        recorder.current = phases
        return client.predict(handle_file(str(photo)), THRESHOLD, api_name="/segment")
    return call


def measure_requests(url: str, photo: Path, requests: int, downloads: Path, engine) -> tuple[dict, dict]:
    """Every way's client phases per request (way -> phase -> list of ms, "total" included), and
    each way's session hash, by which the app's traces are told apart. The engine's whole photo
    (section 1's measure, in this process) takes a turn in every round too, as ENGINE's "total",
    so the ratio compares times taken under the same load. The app's traces of the warm-ups are cleared."""
    import httpx

    from gradio_client import Client

    from bench.latency import engine_end_to_end
    from bench.serving import client_for

    recorder = ClientPhases()
    default = Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)
    shared = client_for(url, downloads)  # given one TLS context (`bench.serving.shared_tls_context`)
    plain = PlainHttpClient(url, downloads)
    callers = {GRADIO_CLIENT: gradio_caller(default, recorder), SHARED_TLS: gradio_caller(shared, recorder),
               PLAIN_HTTP: lambda photo_path, phases: plain.segment(photo_path, THRESHOLD, phases),
               ENGINE: lambda photo_path, phases: engine_end_to_end(engine, photo_path)}
    sessions = {GRADIO_CLIENT: default.session_hash, SHARED_TLS: shared.session_hash, PLAIN_HTTP: plain.session_hash}
    timings = {way: collections.defaultdict(list) for way in callers}
    try:
        with recorder.recording():
            for round_index in range(WARMUP_REQUESTS + requests):
                if round_index == WARMUP_REQUESTS:
                    httpx.post(f"{url}gradio_api/profiling/clear", timeout=30).raise_for_status()
                for way, call in callers.items():
                    phases = collections.defaultdict(float)
                    started = time.perf_counter()
                    call(photo, phases)
                    total = 1000 * (time.perf_counter() - started)
                    if round_index >= WARMUP_REQUESTS:
                        for phase in CLIENT_PHASES:
                            timings[way][phase].append(phases[phase])
                        timings[way]["total"].append(total)
    finally:
        default.close()
        shared.close()
        plain.close()
    return timings, sessions


# The phases of Gradio's trace of a queued request (gradio/profiling.py), in the order they happen.
SERVER_PHASES = {"queue_wait_ms": "waiting in the queue", "preprocess_ms": "preprocess (inputs)",
                 "fn_call_ms": "the handler (`PageHandlers.segment`)", "postprocess_ms": "postprocess (outputs)",
                 "total_ms": "the event, in all"}


def server_traces(url: str, sessions: dict[str, str]) -> tuple[dict, float]:
    """The app's own traces of the timed requests: way -> phase -> list of ms, and the upload
    route's median milliseconds over every way's uploads (Gradio keeps those in its summary alone)."""
    import httpx

    traces = httpx.get(f"{url}gradio_api/profiling/traces", timeout=30).json()
    per_way = {}
    for way, session in sessions.items():
        mine = [trace for trace in traces if trace["session_hash"] == session and trace["fn_name"] == "segment"]
        per_way[way] = {phase: [trace[phase] for trace in mine] for phase in SERVER_PHASES}
    summary = httpx.get(f"{url}gradio_api/profiling/summary", timeout=30).json()
    return per_way, summary.get("upload", {}).get("p50", float("nan"))


def served_engine(bundle_dir: Path):
    """The engine as the app builds it, in this process: the yardstick, and the handler's steps."""
    from demo.engine import SegmentationEngine
    from demo.loading import load_bundle

    bundle = load_bundle(bundle_dir)
    engine = SegmentationEngine(bundle.model, bundle.config)
    engine.warm_up()
    return bundle, engine


def handler_steps(bundle, engine, photo: Path, repeats: int) -> dict[str, list[float]]:
    """The handler's steps as `PageHandlers.segment` runs them, timed in this process on the same photo,
    interleaved (the pictures are the same each time, so `save_picture` finds them written, as the app
    does for a photo sent again)."""
    from bench.timing import interleaved_durations_ms
    from demo.engine import mask_stats, mask_to_png_array, scale_probabilities, threshold_probabilities
    from demo.handlers import CAR_COLOUR, DEFAULT_OPACITY, Segmentation, draw_cars, render, save_picture
    from demo.imaging import load_rgb
    from demo.model_facts import class_words

    words = class_words(bundle.config)
    rgb = load_rgb(photo)
    probabilities = engine.network_probabilities(rgb)
    segmentation = Segmentation(rgb, probabilities, 0.0)
    mask = threshold_probabilities(scale_probabilities(probabilities, rgb.shape[:2]), THRESHOLD)
    drawn = draw_cars(rgb, mask, CAR_COLOUR, DEFAULT_OPACITY)
    return interleaved_durations_ms({
        "decode the upload (`load_rgb`)": lambda: load_rgb(photo),
        "network (`network_probabilities`)": lambda: engine.network_probabilities(rgb),
        "`render`, in all": lambda: render(segmentation, THRESHOLD, DEFAULT_OPACITY, CAR_COLOUR, words),
        "of which: resize, threshold, draw": lambda: draw_cars(
            rgb, threshold_probabilities(scale_probabilities(probabilities, rgb.shape[:2]), THRESHOLD),
            CAR_COLOUR, DEFAULT_OPACITY),
        "of which: drawn JPEG (`save_picture`)": lambda: save_picture(drawn, "cars.jpeg"),
        "of which: mask PNG (`save_picture`)": lambda: save_picture(mask_to_png_array(mask), "car_mask.png"),
        "of which: stats (`mask_stats`)": lambda: mask_stats(mask),
        "for comparison: the JPEG as Pillow encoded it (until 2026-12-04)": lambda: pillow_encoded(drawn, "JPEG"),
        "for comparison: the PNG as Pillow encoded it (until 2026-12-04)": lambda: pillow_encoded(
            mask_to_png_array(mask), "PNG"),
    }, repeats)


def pillow_encoded(pixels, image_format: str) -> bytes:
    """How `save_picture` encoded its pictures until 2026-12-04 (Pillow, its defaults)."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, image_format)
    return buffer.getvalue()


def median(values: list[float]) -> str:
    return f"{statistics.median(values):,.1f}" if values else "-"


def report(timings: dict, server: dict, upload_ms: float, steps: dict, command: str, photo: str,
           load: str) -> str:
    ways = [way for way in timings if way != ENGINE]
    engine_ms = statistics.median(timings[ENGINE]["total"])
    rows = [["**the request, as the caller waits (total)**", *(f"**{median(timings[way]['total'])}**" for way in ways)],
            [f"the request / the engine's whole photo ({engine_ms:,.1f} ms, taking its turn; target <= {TARGET_RATIO:g}x)",
             *(f"{statistics.median(timings[way]['total']) / engine_ms:.2f}x" for way in ways)]]
    rows += [[f"caller: {phase}", *(median(timings[way][phase]) for way in ways)] for phase in CLIENT_PHASES]
    rows += [[f"app: {label}", *(median(server[way][phase]) for way in ways)] for phase, label in SERVER_PHASES.items()]
    lines = [
        "| milliseconds, median | " + " | ".join(ways) + " |",
        "|---" * (len(ways) + 1) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        f"The app's upload route (`POST /gradio_api/upload`, every way's uploads): {upload_ms:,.1f} ms.",
        "",
        "| the handler's steps, in this process on the same photo | ms, median |",
        "|---|---|",
        *(f"| {step} | {median(values)} |" for step, values in steps.items()),
    ]
    return "\n".join([
        f"`{command}`: /segment on {photo} "
        f"({len(timings[ENGINE]['total'])} requests per way after {WARMUP_REQUESTS} warm-ups, the ways taking turns; app.py with "
        "GRADIO_PROFILING=1, on loopback). " + load,
        "",
        *lines,
    ]) + "\n"


def load_note(before: tuple[float, float, float], after: tuple[float, float, float]) -> str:
    return (f"Load average (1 min) {before[0]:.2f} before and {after[0]:.2f} after, on {os.cpu_count()} cores "
            "(the app, this process and anything else running share them: compare the ways within one run).")


def photo_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, such as 4000x3000; got {text!r}") from None
    if not (16 <= width <= 8000 and 16 <= height <= 8000):
        raise argparse.ArgumentTypeError(f"each side from 16 to 8000 pixels; got {text!r}")
    return width, height


def enlarged_jpeg(photo: Path, size: tuple[int, int], folder: Path) -> Path:
    """`photo` enlarged to `size` (width, height) and written as a JPEG, as a phone would send it."""
    import cv2

    from demo.imaging import load_rgb

    path = folder / f"{photo.stem}_{size[0]}x{size[1]}.jpg"
    enlarged = cv2.resize(load_rgb(photo), size, interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(path), cv2.cvtColor(enlarged, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, PHONE_JPEG_QUALITY])
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=25, help="timed requests per way of calling (default 25)")
    parser.add_argument("--photo", type=Path, default=DEFAULT_PHOTO, help=f"the photo (default {DEFAULT_PHOTO.name})")
    parser.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE, help="the bundle the app serves")
    parser.add_argument("--size", type=photo_size, help="send the photo enlarged to WIDTHxHEIGHT (bicubic), as a "
                        f"JPEG of quality {PHONE_JPEG_QUALITY}, as a phone sends one")
    parser.add_argument("--output", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    if args.requests < 1 or not args.photo.is_file() or not args.bundle.is_dir():
        parser.error("--requests must be at least 1, and --photo and --bundle must exist")

    from bench.serving import first_answer, running_app

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="request-profile-") as scratch:
        scratch = Path(scratch)
        downloads = scratch / "downloads"
        downloads.mkdir()
        photo = enlarged_jpeg(args.photo, args.size, scratch) if args.size else args.photo
        # The app's uploads and pictures go to a folder of this run's own; Gradio traces every request.
        # gradio_client leaves an empty folder in the temp dir per download: keep them in the scratch dir.
        with mock.patch.dict(os.environ, GRADIO_PROFILING="1", GRADIO_TEMP_DIR=str(scratch / "uploads")), \
                mock.patch.object(tempfile, "tempdir", str(scratch)):
            log_path = scratch / "app.log"
            bundle, engine = served_engine(args.bundle)
            with running_app(args.bundle, log_path) as (process, url, _):
                first_answer(process, url, photo, downloads, log_path)
                timings, sessions = measure_requests(url, photo, args.requests, downloads, engine)
                server, upload_ms = server_traces(url, sessions)
            steps = handler_steps(bundle, engine, photo, args.requests)
    command = " ".join(["python -m bench.request_profile", *(argv if argv is not None else sys.argv[1:])])
    what = f"{args.photo.name} enlarged to {args.size[0]}x{args.size[1]} as a JPEG" if args.size else args.photo.name
    markdown = report(timings, server, upload_ms, steps, command, what, load_note(load_before, os.getloadavg()))
    print(markdown)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
