"""The app in a real browser: Debian's chromium driven by Playwright (never a downloaded browser)."""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from demo.bundle import load_bundle
from demo.engine import SegmentationEngine
from demo.ui import build_demo

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
NETWORK_TIMEOUT_MS = 120_000  # the first pass traces the graph, on a CPU shared with other work


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is not installed (apt-get install chromium); the browser test needs it"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def app(launch_app, tiny_bundle_dir):
    """The app's URL and the list of network passes it has made (one entry per call)."""
    network_passes = []
    predict = SegmentationEngine.network_probabilities

    def counted_predict(engine, rgb):
        network_passes.append(rgb.shape)
        return predict(engine, rgb)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegmentationEngine, "network_probabilities", counted_predict)
        yield launch_app(build_demo(load_bundle(tiny_bundle_dir))), network_passes


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    yield page
    page.close()


def wait_until(condition, timeout_s: float = 60, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def wait_for_idle(page):
    """Until the network event's progress over the overlay is gone (it hides when the pass ends)."""
    page.wait_for_selector("#overlay [data-testid=status-tracker].hide", state="attached", timeout=NETWORK_TIMEOUT_MS)


def test_example_then_threshold_slider_redraws_without_running_the_network(app, page, tmp_path):
    from playwright.sync_api import expect

    url, network_passes = app
    page.goto(url)
    overlay = page.locator("#overlay img")

    page.locator("button.gallery-item").first.click()  # choosing an example runs it
    expect(overlay).to_have_attribute("src", re.compile(r"\.jpeg$"), timeout=NETWORK_TIMEOUT_MS)
    wait_for_idle(page)
    passes_before_run = len(network_passes)
    assert passes_before_run >= 1

    page.locator("#run").click()  # and so does the button, once more
    wait_until(lambda: len(network_passes) == passes_before_run + 1, what="the button's network pass")
    wait_for_idle(page)
    coverage = page.locator("#coverage")
    expect(coverage).to_contain_text("At threshold 0.50")
    assert network_passes[-1] == (360, 480, 3)
    passes_before_slider = len(network_passes)
    overlay_before = overlay.get_attribute("src")
    page.screenshot(path=tmp_path / "app_threshold_0.50.png", full_page=True)

    # Drag the threshold to 0.9, as a person would: press on the thumb, release further right.
    track = page.locator("#threshold input[type=range]").bounding_box()
    page.mouse.move(track["x"] + 0.5 * track["width"], track["y"] + track["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.9 * track["width"], track["y"] + track["height"] / 2, steps=5)
    page.mouse.up()

    expect(coverage).to_contain_text(re.compile(r"At threshold 0\.(8|9)\d"))
    expect(overlay).not_to_have_attribute("src", overlay_before)
    page.screenshot(path=tmp_path / "app_threshold_moved.png", full_page=True)
    assert len(network_passes) == passes_before_slider, "moving the slider must not run the network"
    assert not page.script_errors


def test_a_text_file_named_png_shows_a_clear_error_in_the_page(app, page, tmp_path):
    from playwright.sync_api import expect

    url, _ = app
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file with a .png name\n")
    page.goto(url)

    page.locator("#photo input[type=file]").set_input_files(fake)

    expect(page.get_by_text("not an image that can be read")).to_be_visible(timeout=NETWORK_TIMEOUT_MS)
    expect(page.get_by_text("Traceback")).to_have_count(0)
    page.screenshot(path=tmp_path / "app_error.png", full_page=True)
    assert not page.script_errors
