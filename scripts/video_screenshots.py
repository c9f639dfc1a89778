"""Screenshots of the video tab with a processed clip, at desktop (1366x900) and phone (390x844) sizes.

    .venv/bin/python scripts/video_screenshots.py     # docs/images/video-desktop.png, video-phone.png

The app serves the shipped model (demo/default_model); the clip is a CamVid drive
(`bench.clip_contention.write_clip`); the browser is Debian's chromium through Playwright.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench.clip_contention import CAMVID_DIR, DEFAULT_MODEL, FIXTURE_CAMVID_DIR, camvid_frames, write_clip  # noqa: E402
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SIZES = {"desktop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
SHOWN_AT_S = 2.0  # the frame the paused clip shows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--camvid", type=Path, default=CAMVID_DIR)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "images")
    args = parser.parse_args(argv)

    from playwright.sync_api import expect, sync_playwright

    from demo.loading import load_bundle
    from demo.ui import MAX_UPLOAD_SIZE, build_demo

    camvid = args.camvid if args.camvid.is_dir() else FIXTURE_CAMVID_DIR
    clip = write_clip(camvid_frames(camvid), Path(tempfile.mkdtemp(prefix="video-shots-")) / "drive.mp4", args.seconds)
    demo = build_demo(load_bundle(args.model))
    _, url, _ = demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True,
                            max_file_size=MAX_UPLOAD_SIZE)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for name, viewport in SIZES.items():
                page = browser.new_page(viewport=viewport)
                page.goto(url)
                page.get_by_role("tab", name="Video").click()
                page.locator("#clip input[type=file]").set_input_files(clip)
                expect(page.locator("#clip-coverage")).to_contain_text("At threshold", timeout=600_000)
                page.wait_for_function("() => document.querySelector('#clip-result video')?.readyState >= 2")
                page.evaluate(f"() => {{ const video = document.querySelector('#clip-result video'); "
                              f"video.currentTime = {SHOWN_AT_S}; }}")
                page.wait_for_function("() => !document.querySelector('#clip-result video').seeking")
                page.wait_for_timeout(1000)  # the plot draws itself
                path = args.out / f"video-{name}.png"
                page.screenshot(path=path)
                print(f"wrote {path}")
                page.close()
            browser.close()
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
