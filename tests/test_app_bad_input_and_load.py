"""The running app under bad input and load: every kind of upload, unusable files, many clients at
once, and which files its API hands out.

Elsewhere: every image kind and refusal through load_rgb and the engine (test_engine.py), uploads
over the size limit (test_app.py), the app probed as a hostile visitor (test_app_hostile_visitor.py),
the Hub unreachable, missing or corrupted (test_hub.py), the push token (test_push.py), training
killed or out of disk (test_train.py) and data errors naming the file (test_data.py).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

from demo.bundle import CONFIG_FILE, MODEL_FILE
from demo.imaging import MAX_ASPECT_RATIO
from demo.examples import EXAMPLES_DIR
from demo.ui import build_demo
from helpers import (
    CAMVID_FIXTURE,
    REPO_ROOT,
    animated_gif,
    camvid_png_bytes,
    cmyk_jpeg,
    decompression_bomb_png,
    grayscale_png,
    jpeg_bytes,
    palette_png,
    running_app_py,
    segment,
    sixteen_bit_png,
    transparent_rgba_png,
)

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


# --- image kinds not covered by helpers.py: a single pixel and strips as long as allowed ------

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



# --- safety ----------------------------------------------------------------------------------


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
