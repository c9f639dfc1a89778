"""The overlaid clip plays in a real browser: Debian's chromium through Playwright (never a downloaded one)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from clip_helpers import BlankEngine, camvid_clip
from demo.video import segment_clip

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PAGE = """<!doctype html><video id="clip" src="{name}" muted preload="auto"></video>"""
# Resolves with what the <video> went through: it can play, it seeks to the middle, it shows a frame there.
PLAY_AND_SEEK_JS = """async () => {
  const video = document.getElementById("clip");
  const happened = (name) => new Promise((resolve) => video.addEventListener(name, resolve, {once: true}));
  const failed = new Promise((resolve) => video.addEventListener("error", () => resolve("error"), {once: true}));
  const stalled = new Promise((resolve) => setTimeout(() => resolve("stalled"), 30000));
  if (video.error) return {error: video.error.code};  // failed before this script ran
  if (video.readyState < 3) {
    const outcome = await Promise.race([happened("canplay"), failed, stalled]);
    if (outcome === "error") return {error: video.error.code};
    if (outcome === "stalled") return {error: "no canplay within 30 s", readyState: video.readyState};
  }
  const facts = {duration: video.duration, width: video.videoWidth, height: video.videoHeight};
  video.currentTime = video.duration / 2;
  await Promise.race([happened("seeked"), failed, stalled]);
  await video.play().catch(() => {});
  await new Promise((resolve) => setTimeout(resolve, 300));
  return {...facts, error: video.error && video.error.code, time: video.currentTime};
}"""


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


@pytest.mark.parametrize("rotation", [0, 90])
def test_the_overlaid_clip_plays_and_seeks_in_chromium(browser, tmp_path, rotation):
    source = camvid_clip(tmp_path / "source.mov", 20, rotation=rotation)
    result = segment_clip(BlankEngine(), source, tmp_path, 0.5, 0.4, (255, 0, 255))
    (tmp_path / "page.html").write_text(PAGE.format(name=result.video.name))

    page = browser.new_page()
    try:
        page.goto((tmp_path / "page.html").as_uri())  # from a file the browser can seek without a server
        outcome = page.evaluate(PLAY_AND_SEEK_JS)
    finally:
        page.close()
    assert outcome["error"] is None, f"MediaError code {outcome['error']}"
    assert (outcome["width"], outcome["height"]) == ((480, 360) if rotation == 0 else (360, 480))
    assert outcome["duration"] == pytest.approx(2.0, abs=0.15)
    assert outcome["time"] >= 0.9, "seeked to the middle"
