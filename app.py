"""Hugging Face Spaces entry point: serve the configured model bundle (demo/loading.py chooses it).

Locally this serves http://127.0.0.1:7860; Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT (which Spaces sets) choose another address. Uploads and pictures go to
a folder of this app's own (GRADIO_TEMP_DIR chooses another), which the app sweeps.
"""
import time

STARTED = time.perf_counter()

import logging  # noqa: E402  (the clock starts before the imports: they are most of the start-up)
import os  # noqa: E402
import tempfile  # noqa: E402

from demo.loading import resolve_bundle  # noqa: E402
from demo.ui import MAX_UPLOAD_SIZE, build_demo  # noqa: E402  (imports Gradio)

if __name__ == "__main__":
    imported = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, not news
    # Not Gradio's shared default: the sweep would age out other Gradio apps' files there.
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "car-segmentation-uploads"))
    bundle = resolve_bundle()
    loaded = time.perf_counter()
    demo = build_demo(bundle)
    logging.getLogger("app").info(
        "Ready to launch %.1f s after start: imports (Gradio's most of it) %.1f s, the model %.1f s, the page %.1f s",
        time.perf_counter() - STARTED, imported - STARTED, loaded - imported, time.perf_counter() - loaded)
    demo.launch(max_file_size=MAX_UPLOAD_SIZE)
