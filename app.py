"""Hugging Face Spaces entry point: serve the configured model bundle (see demo/bundle.py).

Locally this serves http://127.0.0.1:7860; Gradio's own GRADIO_SERVER_NAME and
GRADIO_SERVER_PORT (which Spaces sets) choose another address. Uploads and pictures go to
a folder of this app's own (GRADIO_TEMP_DIR chooses another), which the app sweeps.
"""
import logging
import os
import tempfile

from demo.bundle import resolve_bundle
from demo.ui import MAX_UPLOAD_SIZE, build_demo

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, not news
    # Not Gradio's shared default: the sweep would age out other Gradio apps' files there.
    os.environ.setdefault("GRADIO_TEMP_DIR", os.path.join(tempfile.gettempdir(), "car-segmentation-uploads"))
    bundle = resolve_bundle()
    build_demo(bundle).launch(max_file_size=MAX_UPLOAD_SIZE)
