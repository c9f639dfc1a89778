"""Hugging Face Spaces entry point: serve the configured model bundle (see demo/bundle.py).

Locally this serves http://127.0.0.1:7860; Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT (which Spaces sets) choose another address.
"""
import logging

from demo.bundle import resolve_bundle
from demo.ui import MAX_UPLOAD_SIZE, build_demo

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, not news
    bundle = resolve_bundle()
    build_demo(bundle).launch(max_file_size=MAX_UPLOAD_SIZE)
