"""Issue #6, reliability and safety: what the app does with bad input, load, faults and attacks.

What other files already cover is not repeated here: every image kind and refusal through
load_rgb and the engine (test_engine.py), uploads over the size limit (test_app.py), the Hub
unreachable, missing or corrupted (test_hub.py), the push token (test_push.py), training killed
or out of disk (test_train.py) and data errors naming the file (test_data.py).
"""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import keras
import numpy as np
import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from demo.bundle import CONFIG_FILE, MODEL_FILE, BundleError
from demo.bundle_files import sha256_of
from demo.loading import load_bundle, resolve_bundle
from demo.engine import SegmentationEngine, threshold_probabilities
from demo.imaging import MAX_ASPECT_RATIO, load_rgb
from demo.examples import EXAMPLES_DIR
from demo.ui import build_demo
from helpers import (
    CAMVID_FIXTURE,
    REPO_ROOT,
    animated_gif,
    camvid_png_bytes,
    cmyk_jpeg,
    decompression_bomb_png,
    free_port,
    grayscale_png,
    jpeg_bytes,
    palette_png,
    running_app_py,
    segment,
    serving_config,
    sixteen_bit_png,
    transparent_rgba_png,
)

# How the tiny test bundle is fed: photos scaled to 180x240's pixel count, padded to a multiple of 16.
TINY_FEED = serving_config((180, 240), "keep_aspect", 16, threshold=0.5)
# JPEG (the overlay's format) moves a flat colour by a few levels.
JPEG_TOLERANCE = 8


@pytest.fixture(scope="module")
def app_url(launch_app, tiny_bundle) -> str:
    return launch_app(build_demo(tiny_bundle))


@pytest.fixture(scope="module")
def client(app_url) -> Client:
    return Client(app_url, verbose=False)


def small_street_photo(folder: Path) -> Path:
    """A CamVid frame at 240x180: cheap enough to send hundreds of times."""
    path = folder / "street_240x180.png"
    Image.open(sorted(EXAMPLES_DIR.glob("*.png"))[0]).resize((240, 180), Image.BILINEAR).save(path)
    return path


# --- image kinds not covered by test_engine.py: a single pixel and strips as long as allowed ---

def solid_png(tmp_path: Path, height: int, width: int, colour=(30, 120, 210)):
    path = tmp_path / f"solid_{height}x{width}.png"
    Image.new("RGB", (width, height), colour).save(path)
    return path, (height, width), list(colour)


def one_pixel_png(tmp_path):
    return solid_png(tmp_path, 1, 1)


def wide_strip_png(tmp_path):
    return solid_png(tmp_path, 10, 10 * MAX_ASPECT_RATIO)


def tall_strip_png(tmp_path):
    return solid_png(tmp_path, 10 * MAX_ASPECT_RATIO, 10)


def exif_rotated_jpeg(tmp_path):
    """Stored landscape (80x40) with a red top-left corner and Orientation 6: shown portrait, red top-right."""
    stored = Image.new("RGB", (80, 40), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 16, 16))
    exif = stored.getexif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_bytes(stored, exif=exif.tobytes()))
    return path, (80, 40), [0, 0, 255]  # the shown top-left corner is blue: the red one moved right


@pytest.mark.parametrize("height, width", [(1, 1), (10, 10 * MAX_ASPECT_RATIO), (10 * MAX_ASPECT_RATIO, 10)])
def test_a_single_pixel_and_long_strips_segment_at_their_own_size(tmp_path, mask_model, height, width):
    # First half (along the long side) red, which the red-channel model calls car; the rest blue.
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[..., 2] = 255
    car = np.zeros((height, width), bool)
    if width >= height:
        car[:, :(width + 1) // 2] = True
    else:
        car[:(height + 1) // 2] = True
    rgb[car] = (255, 0, 0)
    path = tmp_path / "strip.png"
    Image.fromarray(rgb).save(path)

    engine = SegmentationEngine(mask_model, TINY_FEED)
    mask = threshold_probabilities(engine.predict_probabilities(load_rgb(path)), 0.5)

    assert mask.shape == (height, width)
    wrong = np.argwhere(mask != car)
    along = 1 if width >= height else 0
    assert np.all(np.abs(wrong[:, along] - (max(height, width) + 1) // 2) <= 3), \
        "only pixels at the red/blue border (resized and back) may differ"


# --- every kind of upload through the running app ------------------------------------------

@pytest.mark.parametrize("make_image", [
    one_pixel_png, wide_strip_png, tall_strip_png, grayscale_png, transparent_rgba_png, palette_png,
    sixteen_bit_png, cmyk_jpeg, exif_rotated_jpeg, animated_gif,
])
def test_every_image_kind_is_answered_at_its_size_and_orientation_through_the_app(client, tmp_path, make_image):
    path, (height, width), top_left = make_image(tmp_path)

    overlay_path, mask_path, stats = segment(client, path, threshold=1.0)  # nothing is tinted at 1.0

    overlay, mask = np.asarray(Image.open(overlay_path)), np.asarray(Image.open(mask_path))
    assert overlay.shape == (height, width, 3)
    assert mask.shape == (height, width)
    np.testing.assert_allclose(overlay[0, 0], top_left, atol=JPEG_TOLERANCE)
    assert stats == {"coverage_percent": 0.0, "car_regions": 0}


def test_an_exif_rotated_photo_keeps_its_orientation_through_the_app(client, tmp_path):
    path, _, _ = exif_rotated_jpeg(tmp_path)
    overlay = np.asarray(Image.open(segment(client, path, threshold=1.0)[0]))
    np.testing.assert_allclose(overlay[4, -5], [255, 0, 0], atol=2 * JPEG_TOLERANCE)  # stored top-left, turned


def text_named_png(tmp_path):
    path = tmp_path / "holiday.png"
    path.write_text("this is a text file with a .png name\n")
    return path


def empty_png(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    return path


def truncated_png(tmp_path):
    path = tmp_path / "truncated.png"
    path.write_bytes(camvid_png_bytes(CAMVID_FIXTURE)[:20_000])
    return path


def truncated_jpeg(tmp_path):
    path = tmp_path / "truncated.jpg"
    photo = Image.open(sorted(EXAMPLES_DIR.glob("*.png"))[0])
    path.write_bytes(jpeg_bytes(photo)[:5_000])
    return path


def too_thin_strip(tmp_path):
    """1 x 65,500 pixels (339 bytes of PNG): padded to the network's stride it cost 17 photos' time."""
    return solid_png(tmp_path, 1, 65_500)[0]


def too_long_strip(tmp_path):
    """10 x 70,000 pixels: under the pixel limit, longer than a JPEG (the overlay) can be, refused for its shape."""
    return solid_png(tmp_path, 10, 70_000)[0]


def decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(decompression_bomb_png())
    return path


@pytest.mark.parametrize("make_file, message", [
    (empty_png, "The file .* is empty"),
    (text_named_png, "not an image that can be read"),
    (truncated_png, "truncated or damaged"),
    (truncated_jpeg, "truncated or damaged"),
    (decompression_bomb, r"30000x30000 pixels \(900 MP\); the limit is 50 MP"),
    (too_thin_strip, r"65500x1 pixels; its long side may be at most 20 times its short side"),
    (too_long_strip, r"70000x10 pixels; its long side may be at most 20 times its short side"),
])
def test_an_unusable_upload_gets_a_clear_message_and_the_next_request_is_served(client, tmp_path, make_file,
                                                                               message):
    with pytest.raises(AppError, match=message) as refusal:
        segment(client, make_file(tmp_path))
    assert "Traceback" not in str(refusal.value)

    overlay_path, _, stats = segment(client, small_street_photo(tmp_path))
    assert Image.open(overlay_path).size == (240, 180)
    assert set(stats) == {"coverage_percent", "car_regions"}


# --- load: app.py in its own process, eight clients at once ----------------------------------

LOAD_CLIENTS = 8
LOAD_REQUESTS_PER_CLIENT = 50
WARM_UP_REQUESTS_PER_CLIENT = 5
ALLOWED_MEMORY_GROWTH = 0.10


def resident_memory(process: psutil.Process) -> int:
    """Bytes of RAM the server holds, any child process included."""
    return sum(each.memory_info().rss for each in [process, *process.children(recursive=True)])


def send_requests(clients: list[Client], photo: Path, requests_per_client: int) -> tuple[int, list[str]]:
    """Every client sends its requests one after the other, all clients at once; returns (answers, errors)."""
    def one_client(client: Client) -> tuple[int, list[str]]:
        answered, errors = 0, []
        for _ in range(requests_per_client):
            try:
                overlay_path, _, _ = segment(client, photo)
                assert Image.open(overlay_path).size == (240, 180), "overlay at the photo's size"
                answered += 1
            except Exception as error:  # every failure counts, whatever its kind
                errors.append(repr(error))
        return answered, errors

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(one_client, clients))
    return sum(answered for answered, _ in results), [error for _, errors in results for error in errors]


def test_eight_clients_fifty_requests_each_without_errors_or_memory_growth(tiny_bundle_dir, tmp_path,
                                                                           unused_port, capsys):
    photo = small_street_photo(tmp_path)
    log = tmp_path / "app.log"
    with running_app_py(tiny_bundle_dir, unused_port, log) as (server, _):
        process = psutil.Process(server.pid)
        clients = [Client(f"http://127.0.0.1:{unused_port}/", verbose=False) for _ in range(LOAD_CLIENTS)]
        answered, errors = send_requests(clients, photo, WARM_UP_REQUESTS_PER_CLIENT)
        assert errors == [], errors
        after_warm_up = resident_memory(process)

        answered, errors = send_requests(clients, photo, LOAD_REQUESTS_PER_CLIENT)
        after_load = resident_memory(process)

    with capsys.disabled():
        print(f"\nload: {answered} answered, {len(errors)} errors; server RSS {after_warm_up / 2**20:.0f} MiB "
              f"after warm-up, {after_load / 2**20:.0f} MiB after the run")
    assert errors == [], errors[:3]
    assert answered == LOAD_CLIENTS * LOAD_REQUESTS_PER_CLIENT
    assert after_load <= (1 + ALLOWED_MEMORY_GROWTH) * after_warm_up
    assert "Traceback" not in log.read_text()


# --- faults: the Hub, as the running page shows it ------------------------------------------

@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point the already imported huggingface_hub at `endpoint`, online, with an empty cache.

    It reads HF_ENDPOINT and the like when first imported (test_hub.py starts fresh processes for
    that); here the app side runs in this process, so the constants it read are set instead.
    """
    from huggingface_hub import constants

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    return point


def test_an_unreachable_hub_shows_the_fallback_notice_on_the_running_page(hub_at, launch_app, tiny_bundle_dir):
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    hub_at(dead_endpoint)
    bundle = resolve_bundle({"MODEL_REPO": "carseg/tiny-unet", "MODEL_REVISION": "main"}, default_dir=tiny_bundle_dir)

    url = launch_app(build_demo(bundle))

    config = httpx.get(f"{url}config", timeout=30).json()
    notices = [component["props"]["value"] for component in config["components"]
               if component["props"].get("elem_id") == "model-notice"]
    assert len(notices) == 1
    assert "could not be loaded, so the default model is served" in notices[0]
    assert f"the Hub at {dead_endpoint} could not be reached" in notices[0]
    assert any("default model shipped with the app" in str(component["props"].get("value"))
               for component in config["components"]), "the model line names what is served instead"


# --- safety ----------------------------------------------------------------------------------

def test_a_bundle_with_a_lambda_layer_is_refused_and_its_code_never_runs(tiny_bundle_dir, tmp_path):
    marker = tmp_path / "the-lambda-ran"
    # The layer's function leaves a file behind whenever it runs (as any code in a model file could).
    leave_marker = eval(f"lambda x: x if open({str(marker)!r}, 'w').close() is None else x")
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 1, activation="sigmoid")(keras.layers.Lambda(leave_marker)(inputs)))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    model.save(bundle / MODEL_FILE)
    config = json.loads((tiny_bundle_dir / CONFIG_FILE).read_text())
    config["model_sha256"] = sha256_of(bundle / MODEL_FILE)  # the hash matches: only safe mode stands in the way
    (bundle / CONFIG_FILE).write_text(json.dumps(config))
    marker.unlink()  # building the model above ran it once

    with pytest.raises(BundleError, match=r"Refused to load .*model\.keras: it contains code \(a Lambda layer\)"):
        load_bundle(bundle)

    assert not marker.exists()


def test_the_api_takes_only_files_uploaded_to_it(app_url, tmp_path):
    """With preprocess=False the handler reads the path it is given: Gradio must refuse any it did not receive."""
    server_file = sorted((CAMVID_FIXTURE / "train").glob("*.png"))[0]
    uploaded = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("photo.png", server_file.read_bytes())},
                          timeout=30).json()[0]

    def call(path: str) -> str:
        image = {"path": path, "meta": {"_type": "gradio.FileData"}}
        event = httpx.post(f"{app_url}gradio_api/call/segment", json={"data": [image, 0.5]}, timeout=30).json()
        return httpx.get(f"{app_url}gradio_api/call/segment/{event['event_id']}", timeout=120).text

    assert "event: complete" in call(uploaded), "an uploaded file is segmented"
    refused = call(str(server_file))
    assert "event: error" in refused and "event: complete" not in refused


SECRET_FILES = {
    "system password file": lambda bundle_dir: Path("/etc/passwd"),
    "the app's source": lambda bundle_dir: REPO_ROOT / "app.py",
    "the served model": lambda bundle_dir: bundle_dir / MODEL_FILE,
    "the served model's config": lambda bundle_dir: bundle_dir / CONFIG_FILE,
}
FILE_ROUTES = {
    "gradio_api/file=": lambda path: f"gradio_api/file={path}",
    "gradio_api/file/ (deprecated)": lambda path: f"gradio_api/file/{path}",
    "file= (Gradio 3 and 4)": lambda path: f"file={path}",
    "static/ traversal": lambda path: "static/" + "..%2F" * 12 + str(path).lstrip("/"),
    "assets/ traversal": lambda path: "assets/" + "..%2F" * 12 + str(path).lstrip("/"),
}


def test_the_file_route_serves_what_was_uploaded(app_url):
    """The routes below are the right ones: a file the app received comes back through them."""
    content = b"a file the app received"
    uploaded = httpx.post(f"{app_url}gradio_api/upload", files={"files": ("note.txt", content)}, timeout=30).json()[0]
    response = httpx.get(app_url + FILE_ROUTES["gradio_api/file="](uploaded), timeout=30)
    assert response.status_code == 200 and response.content == content


@pytest.mark.parametrize("route", FILE_ROUTES)
@pytest.mark.parametrize("target", SECRET_FILES)
def test_no_file_outside_what_the_app_serves_can_be_fetched(app_url, tiny_bundle_dir, route, target):
    path = SECRET_FILES[target](tiny_bundle_dir)
    assert path.is_file()

    response = httpx.get(app_url + FILE_ROUTES[route](path), timeout=30)

    assert response.status_code in (403, 404), f"{route} answered {response.status_code} for {path}"
    assert path.read_bytes()[:64] not in response.content


class EchoingHub(BaseHTTPRequestHandler):
    """The worst hub: it refuses every request with `status` and echoes the credentials it was sent."""

    status = 401
    authorizations: list[str] = []

    def do_GET(self):
        credentials = self.headers.get("Authorization", "")
        self.authorizations.append(credentials)
        body = json.dumps({"error": f"Invalid credentials: {credentials}"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # The one 401 huggingface_hub does not turn into "repository not found": its message is kept.
        self.send_header("X-Error-Message", "Invalid credentials in Authorization header")
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("status", [401, 403, 500])
def test_the_hub_token_never_reaches_the_page_notice_or_the_logs(hub_at, tiny_bundle_dir, monkeypatch, caplog,
                                                                 capfd, status):
    secret = "hf_appSideSECRETtoken0123456789abcd"
    monkeypatch.setenv("HF_TOKEN", secret)
    handler = type("Hub", (EchoingHub,), {"status": status, "authorizations": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")  # its own handler writes to stderr
    try:
        hub_at(f"http://127.0.0.1:{server.server_address[1]}")
        bundle = resolve_bundle({"MODEL_REPO": "carseg/private-model"}, default_dir=tiny_bundle_dir)
    finally:
        server.shutdown()
        server.server_close()

    assert f"Bearer {secret}" in handler.authorizations, "the token was sent, so the server could echo it"
    assert bundle.notice.startswith("The configured model could not be loaded")
    assert secret not in bundle.notice
    out, err = capfd.readouterr()
    assert secret not in caplog.text and secret not in out + err
    assert "Serving the default model instead" in caplog.text


# --- warm-up ---------------------------------------------------------------------------------

def test_after_warm_up_no_photo_waits_for_the_graph_to_be_traced(tiny_bundle):
    engine = SegmentationEngine(tiny_bundle.model, tiny_bundle.config, runtime="tensorflow")
    engine.warm_up()
    assert engine._forward.graph.experimental_get_tracing_count() == 1

    for shape in [(360, 480, 3), (480, 360, 3), (1, 1, 3), (10, 10 * MAX_ASPECT_RATIO, 3)]:
        engine.predict_probabilities(np.zeros(shape, np.uint8))

    assert engine._forward.graph.experimental_get_tracing_count() == 1, "one graph for photos of every size"


def test_after_warm_up_a_street_photo_finds_litert_ready(tiny_bundle):
    """The warm-up plans LiteRT's tensors for the training frames' shape, which 4:3 photos share."""
    bundle = load_bundle(tiny_bundle.path, runtime="litert")  # its carried LiteRT graph
    engine = SegmentationEngine(bundle.model, bundle.config, runtime="litert")
    engine.warm_up()
    assert engine._forward.plans == 1

    engine.predict_probabilities(np.zeros((360, 480, 3), np.uint8))
    engine.predict_probabilities(np.zeros((720, 960, 3), np.uint8))
    assert engine._forward.plans == 1


def test_the_app_warms_its_engine_up_when_built(tiny_bundle, monkeypatch):
    warmed = []
    monkeypatch.setattr(SegmentationEngine, "warm_up", lambda engine: warmed.append(engine))
    build_demo(tiny_bundle)
    assert len(warmed) == 1
