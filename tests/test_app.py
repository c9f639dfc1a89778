"""The Gradio app over HTTP, as its users and API clients reach it (no browser here)."""
from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from conftest import running_app_py
from demo.ui import EXAMPLES_DIR, build_demo, describe_model, parse_colour

CAMVID_EXAMPLE = sorted(EXAMPLES_DIR.glob("*.png"))[0]


@pytest.fixture(scope="module")
def client(launch_app, tiny_bundle) -> Client:
    return Client(launch_app(build_demo(tiny_bundle)), verbose=False)


def segment(client: Client, path: Path, threshold: float = 0.5):
    return client.predict(handle_file(str(path)), threshold, api_name="/segment")


def test_segment_endpoint_returns_overlay_mask_and_stats(client):
    overlay_path, mask_path, stats = segment(client, CAMVID_EXAMPLE)

    photo = Image.open(CAMVID_EXAMPLE)
    overlay, mask = Image.open(overlay_path), Image.open(mask_path)
    assert overlay.size == photo.size == (480, 360)
    assert mask.format == "PNG" and mask.size == photo.size
    mask_pixels = np.asarray(mask)
    assert set(np.unique(mask_pixels)) <= {0, 255}, "the mask is binary: car 255, background 0"
    assert set(stats) == {"coverage_percent", "car_regions"}
    assert stats["coverage_percent"] == pytest.approx(100 * np.mean(mask_pixels == 255), abs=0.01)


def test_the_threshold_parameter_is_applied(client):
    everything = segment(client, CAMVID_EXAMPLE, threshold=0.0)[2]
    strict = segment(client, CAMVID_EXAMPLE, threshold=0.99)[2]
    assert everything["coverage_percent"] == 100.0
    assert strict["coverage_percent"] < everything["coverage_percent"]


def test_only_segment_is_public_and_takes_image_and_threshold(client):
    api = client.view_api(return_format="dict", print_info=False)
    assert list(api["named_endpoints"]) == ["/segment"]
    assert not api["unnamed_endpoints"]
    endpoint = api["named_endpoints"]["/segment"]
    assert [parameter["parameter_name"] for parameter in endpoint["parameters"]] == ["image", "threshold"]
    assert [output["component"] for output in endpoint["returns"]] == ["Image", "Image", "Json"]


def test_the_uploaded_file_itself_reaches_the_decoder(client, tmp_path):
    # A portrait phone photo stored landscape with an EXIF rotation: the answer must be portrait.
    stored = Image.open(CAMVID_EXAMPLE).convert("RGB")
    exif = stored.getexif()
    exif[0x0112] = 6
    rotated = tmp_path / "portrait.jpg"
    stored.save(rotated, quality=90, exif=exif.tobytes())
    # A 16-bit grayscale PNG, which a conversion to 8-bit RGB upstream would have clipped to white.
    deep = tmp_path / "sixteen_bit.png"
    Image.fromarray(np.full((90, 120), 100 * 257, np.uint16)).save(deep)

    assert Image.open(segment(client, rotated)[0]).size == (360, 480)
    overlay = np.asarray(Image.open(segment(client, deep, threshold=1.0)[0]))  # nothing tinted
    assert overlay.shape == (90, 120, 3)
    assert np.abs(overlay.astype(int) - 100).max() <= 3, "100 * 257 in 16 bits is 100 in 8 bits (JPEG aside)"


def test_a_file_that_is_not_an_image_gets_a_clear_error_and_the_server_keeps_serving(client, tmp_path):
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file with a .png name\n")

    with pytest.raises(AppError, match="not an image that can be read") as refusal:
        segment(client, fake)
    assert "Traceback" not in str(refusal.value)

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(AppError, match="empty"):
        segment(client, empty)

    overlay_path, _, _ = segment(client, CAMVID_EXAMPLE)
    assert Image.open(overlay_path).size == (480, 360)


def test_the_server_refuses_uploads_over_the_size_limit(client, tmp_path):
    too_big = b"\0" * (31 * 1024 * 1024)
    response = httpx.post(f"{client.src.rstrip('/')}/gradio_api/upload", files={"files": ("big.png", too_big)},
                          timeout=60)
    assert response.status_code == 413


def test_page_names_the_served_model_and_shows_its_notice(tiny_bundle):
    tiny_bundle.notice = "The configured model could not be loaded, so the default model is served."
    try:
        config = build_demo(tiny_bundle).get_config_file()
    finally:
        tiny_bundle.notice = ""
    texts = [component["props"].get("value") or "" for component in config["components"]
             if component["type"] == "markdown"]
    assert any(tiny_bundle.source in text and "car IoU 0.500" in text and "runs on LiteRT" in text for text in texts)
    assert any("Warning" in text and "could not be loaded" in text for text in texts)


def test_model_line_without_metrics_or_with_a_hub_revision(tiny_bundle):
    tiny_bundle.revision = "0123456789abcdef0123"
    line = describe_model(tiny_bundle)
    tiny_bundle.revision = None
    assert "revision `0123456789ab`" in line and "car IoU 0.500" in line

    metrics = tiny_bundle.config.pop("metrics")
    try:
        assert "no validation IoU recorded" in describe_model(tiny_bundle)
    finally:
        tiny_bundle.config["metrics"] = metrics


@pytest.mark.parametrize("value, rgb", [("#0c2238", (12, 34, 56)), ("#FFFFFF", (255, 255, 255)),
                                        ("", (255, 40, 40)), (None, (255, 40, 40)), ("red", (255, 40, 40))])
def test_colour_picker_values_are_parsed(value, rgb):
    assert parse_colour(value) == rgb


def test_app_py_serves_on_loopback_where_gradio_env_says(tiny_bundle_dir, tmp_path, unused_port):
    log = tmp_path / "app.log"
    with running_app_py(tiny_bundle_dir, unused_port, log) as (_, config):
        assert f"http://127.0.0.1:{unused_port}" in log.read_text()
        assert any(str(tiny_bundle_dir) in str(component["props"].get("value")) for component in config["components"])
