"""The app in a real browser: Debian's chromium driven by Playwright (never a downloaded browser).

Every request the page sends to the queue is recorded by the name of the event it calls, and
every network pass the server makes is counted, so each way of giving a photo is checked to run
the network exactly once. Screenshots (desktop 1366x900, phone 390x844) go to each test's
temporary folder.
"""
from __future__ import annotations

import base64
import json
import os
import re
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from demo.loading import load_bundle
from demo.engine import SegmentationEngine
from demo.examples import EXAMPLES, EXAMPLES_DIR
from demo.handlers import NO_PHOTO
from demo.ui import build_demo

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# A fake camera (a generated test pattern), so the webcam can be used headless.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
NETWORK_TIMEOUT_MS = 120_000  # the first pass traces the graph, on a CPU shared with other work
# Time for a second, unwanted request to follow the first (they came within milliseconds).
SETTLE_MS = 1500
PHOTOS = [EXAMPLES_DIR / "0016E5_08017.png", EXAMPLES_DIR / EXAMPLES[1].file, EXAMPLES_DIR / EXAMPLES[2].file]


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
    """The app's URL, the list of network passes it has made (one entry per pass) and its events'
    names by fn_index."""
    network_passes = []
    predict = SegmentationEngine.network_probabilities

    def counted_predict(engine, rgb, most_pixels=None):
        network_passes.append(rgb.shape)
        return predict(engine, rgb, most_pixels)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SegmentationEngine, "network_probabilities", counted_predict)
        url = launch_app(build_demo(load_bundle(tiny_bundle_dir)))
        config = httpx.get(f"{url}config", timeout=30).json()
        yield url, network_passes, {event["id"]: event["api_name"] for event in config["dependencies"]}


def open_page(browser, app, viewport):
    """A fresh page on the app, recording the events its requests call (page.events, a Counter)."""
    url, _, event_names = app
    context = browser.new_context(viewport=viewport, permissions=["camera", "clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.events = Counter()
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))

    def record(request):
        if urlsplit(request.url).path.endswith("/queue/join"):
            page.events[event_names[json.loads(request.post_data)["fn_index"]]] += 1

    page.on("request", record)
    page.goto(url)
    return page


@pytest.fixture
def desktop(browser, app):
    page = open_page(browser, app, DESKTOP)
    yield page
    page.context.close()


@pytest.fixture
def phone(browser, app):
    page = open_page(browser, app, PHONE)
    yield page
    page.context.close()


def wait_until(condition, timeout_s: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def result_pictures(page) -> list[str]:
    """The before/after view's two pictures (empty when it shows nothing)."""
    return page.locator("#result img").evaluate_all("images => images.map(image => image.getAttribute('src'))")


def give_photo(page, how: str, photo: Path) -> None:
    """Give the page a photo as a person would: from a file, pasted, or taken with the (fake) webcam."""
    photo_box = page.locator("#photo")
    if how == "upload":
        photo_box.locator("input[type=file]").set_input_files(photo)
    elif how == "paste":
        page.evaluate("""async (encoded) => {
            const bytes = Uint8Array.from(atob(encoded), character => character.charCodeAt(0));
            await navigator.clipboard.write([new ClipboardItem({"image/png": new Blob([bytes], {type: "image/png"})})]);
        }""", base64.b64encode(photo.read_bytes()).decode())
        photo_box.get_by_role("button", name="Paste from clipboard").click()
    elif how == "webcam":
        photo_box.get_by_role("button", name="Capture from camera").click()
        photo_box.get_by_text("Click to Access Webcam").click()
        # A capture before the camera's first frame takes nothing (the page checks the video's size).
        page.wait_for_function("() => document.querySelector('#photo video')?.videoWidth > 0")
        photo_box.get_by_role("button", name="capture photo").click()
    else:
        raise ValueError(how)


def click_example(page, scene: str) -> None:
    page.locator("#examples tr", has_text=scene).click()


def give_photo_and_count(page, app, how: str, photo: Path) -> tuple[Counter, int]:
    """The events the page called and the network passes the server made for one new photo."""
    from playwright.sync_api import expect

    _, network_passes, _ = app
    text_before, pictures_before = page.locator("#coverage").inner_text(), result_pictures(page)
    page.events.clear()
    passes_before = len(network_passes)
    give_photo(page, how, photo)
    expect(page.locator("#coverage")).not_to_have_text(text_before, timeout=NETWORK_TIMEOUT_MS)
    expect(page.locator("#coverage")).to_contain_text("At threshold")
    wait_until(lambda: result_pictures(page) != pictures_before, what="the new result's pictures")
    page.wait_for_timeout(SETTLE_MS)
    return Counter(page.events), len(network_passes) - passes_before


def test_each_new_photo_runs_the_network_once_and_a_refused_file_clears_the_result(desktop, app, tmp_path):
    from playwright.sync_api import expect

    _, network_passes, _ = app
    page = desktop
    # The page opens on a worked example, not on empty boxes.
    expect(page.locator("#coverage")).to_contain_text("Example: Supermarket car park")
    assert len(result_pictures(page)) == 2, "before and after"
    page.screenshot(path=tmp_path / "desktop_opened.png")
    page.get_by_text("Car mask, to download").click()  # opened, so that its picture is drawn
    expect(page.locator("#mask img")).to_have_count(1)

    measured = {}
    for how, photo in [("upload", PHOTOS[0]), ("upload", PHOTOS[1]), ("paste", PHOTOS[2]), ("webcam", None)]:
        events, passes = give_photo_and_count(page, app, how, photo)
        measured[how] = measured.get(how, []) + [(dict(events), passes)]
        assert events == {"run_network": 1, "draw_new_photo": 1}, (how, events)
        assert passes == 1, (how, passes)
        expect(page.locator("#mask img")).to_have_count(1)
    print(f"\nrequests and network passes per new photo: {measured}")
    assert network_passes[-1][:2] != (360, 480), "the webcam's picture, not a CamVid frame, was run last"
    page.screenshot(path=tmp_path / "desktop_result.png", full_page=True)

    # A refused file after a good photo: one message, and nothing of the previous photo is left.
    fake = tmp_path / "holiday.png"
    fake.write_text("this is a text file with a .png name\n")
    page.events.clear()
    passes_before = len(network_passes)
    give_photo(page, "upload", fake)
    expect(page.locator("#coverage")).to_have_text(NO_PHOTO, timeout=NETWORK_TIMEOUT_MS)
    expect(page.get_by_text("not an image that can be read")).to_have_count(1)
    page.wait_for_timeout(SETTLE_MS)
    expect(page.get_by_text("not an image that can be read")).to_have_count(1)
    expect(page.get_by_text("Traceback")).to_have_count(0)
    expect(page.locator("#result img")).to_have_count(0)
    expect(page.locator("#mask img")).to_have_count(0)
    assert page.events == {"run_network": 1, "forget_photo": 1}
    assert len(network_passes) == passes_before
    page.screenshot(path=tmp_path / "desktop_refused.png", full_page=True)

    # The sliders have nothing to redraw now, and say so rather than bring the old photo back.
    page.locator("#threshold input[type=number]").fill("0.3")
    page.locator("#threshold input[type=number]").press("Enter")
    page.wait_for_timeout(SETTLE_MS)
    expect(page.locator("#coverage")).to_have_text(NO_PHOTO)
    expect(page.locator("#result img")).to_have_count(0)

    # An example answers without the network once it has been shown (the first was, at start).
    page.events.clear()
    passes_before = len(network_passes)
    click_example(page, "Supermarket car park")
    expect(page.locator("#coverage")).to_contain_text("Example: Supermarket car park")
    expect(page.locator("#coverage")).to_contain_text("At threshold 0.30")
    page.wait_for_timeout(SETTLE_MS)
    assert page.events == {"show_example": 1}
    assert len(network_passes) == passes_before
    expect(page.locator("#mask img")).to_have_count(1)
    assert not page.script_errors


def test_the_threshold_slider_redraws_without_running_the_network(desktop, app, tmp_path):
    from playwright.sync_api import expect

    _, network_passes, _ = app
    page = desktop
    events, passes = give_photo_and_count(page, app, "upload", PHOTOS[0])
    assert passes == 1
    coverage = page.locator("#coverage")
    expect(coverage).to_contain_text("At threshold 0.50")
    assert network_passes[-1] == (360, 480, 3)
    passes_before_slider = len(network_passes)
    pictures_before = result_pictures(page)

    # Drag the threshold to 0.9, as a person would: press on the thumb, release further right.
    track = page.locator("#threshold input[type=range]").bounding_box()
    page.mouse.move(track["x"] + 0.5 * track["width"], track["y"] + track["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + 0.9 * track["width"], track["y"] + track["height"] / 2, steps=5)
    page.mouse.up()

    expect(coverage).to_contain_text(re.compile(r"At threshold 0\.(8|9)\d"))
    wait_until(lambda: result_pictures(page)[1] != pictures_before[1], what="the redrawn cars")
    assert result_pictures(page)[0] == pictures_before[0], "the photo itself is not written again"
    page.screenshot(path=tmp_path / "desktop_threshold_moved.png", full_page=True)
    assert len(network_passes) == passes_before_slider, "moving the slider must not run the network"
    assert set(page.events) == {"run_network", "draw_new_photo", "redraw"}
    assert not page.script_errors


def fully_in_view(page, selector: str) -> bool:
    return page.locator(selector).first.evaluate(
        "element => { const box = element.getBoundingClientRect(); return box.top >= 0 && box.bottom <= innerHeight; }")


def test_on_a_phone_the_result_is_in_view_after_an_upload_and_after_an_example(phone, app, tmp_path):
    from playwright.sync_api import expect

    page = phone
    expect(page.locator("#coverage")).to_contain_text("Example:")
    page.screenshot(path=tmp_path / "phone_opened.png")

    events, passes = give_photo_and_count(page, app, "upload", PHOTOS[1])
    assert events == {"run_network": 1, "draw_new_photo": 1} and passes == 1
    wait_until(lambda: fully_in_view(page, "#result-panel"), timeout_s=5, what="the result in view")
    page.screenshot(path=tmp_path / "phone_after_upload.png")

    # From the examples, far below, the page scrolls back up to the result.
    click_example(page, "Red bus among cars")
    expect(page.locator("#coverage")).to_contain_text("Example: Red bus among cars", timeout=NETWORK_TIMEOUT_MS)
    wait_until(lambda: fully_in_view(page, "#result-panel"), timeout_s=5, what="the result scrolled into view")
    page.screenshot(path=tmp_path / "phone_after_example.png")
    page.screenshot(path=tmp_path / "phone_whole_page.png", full_page=True)
    assert not page.script_errors
