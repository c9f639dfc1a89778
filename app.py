"""Hugging Face Spaces entry point: serve the configured model bundle (see demo/bundle.py).

Locally this serves http://127.0.0.1:7860; Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT (which Spaces sets) choose another address. Uploads and pictures go to
a folder of this app's own (GRADIO_TEMP_DIR chooses another), which the app sweeps.
"""
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from demo.bundle import resolve_bundle

if __name__ == "__main__":
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, not news
    # Not Gradio's shared default: the sweep would age out other Gradio apps' files there.
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "car-segmentation-uploads"))
    # Importing Gradio takes seconds of Python; loading the model is mostly native code (hashing,
    # LiteRT's planning and warm-up run). Done side by side, the model is ready when Gradio is.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="load-model") as pool:
        loading = pool.submit(resolve_bundle)
        from demo.ui import MAX_UPLOAD_SIZE, build_demo  # imports Gradio

        imported = time.perf_counter()
        bundle = loading.result()
    demo = build_demo(bundle)
    logging.getLogger("app").info(
        "Ready to launch %.1f s after start: Gradio imported in %.1f s, the model loaded beside it, "
        "the page built in %.1f s", time.perf_counter() - started, imported - started,
        time.perf_counter() - imported)
    demo.launch(max_file_size=MAX_UPLOAD_SIZE)
