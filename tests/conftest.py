"""Shared fixtures: the CamVid pairs shipped in tests/fixtures, a small real bundle, a launched app.

Helpers that are not fixtures are in helpers.py."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

from helpers import CAMVID_FIXTURE, SECRET, free_port, make_tiny_bundle, red_channel_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def client_downloads_in_pytests_temp_dir(tmp_path_factory):
    """gradio_client 2.7 leaves an empty folder in the system temp dir for every answer it
    downloads; keep them with pytest's own temporary files instead of littering /tmp."""
    import tempfile

    previous, tempfile.tempdir = tempfile.tempdir, str(tmp_path_factory.mktemp("system-temp"))
    yield
    tempfile.tempdir = previous


@pytest.fixture(scope="session")
def camvid_dir() -> Path:
    """Four train and two val pairs of real CamVid frames (480x360), SegNet layout."""
    return CAMVID_FIXTURE


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="module")
def tiny_bundle(tiny_bundle_dir):
    """The tiny bundle loaded, one per test module (tests may change its notice or config and restore it)."""
    from demo.loading import load_bundle

    return load_bundle(tiny_bundle_dir)


@pytest.fixture(scope="module")
def mask_model():
    """A network whose car probability is the red channel: its answer says what it was fed."""
    return red_channel_model()


@pytest.fixture
def token_in_env(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)


@pytest.fixture
def unused_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    return free_port()


@pytest.fixture(scope="module")
def launch_app():
    """Launch a Gradio app on a free loopback port and return its URL; all are closed afterwards."""
    from demo.ui import MAX_UPLOAD_SIZE

    launched = []

    def launch(demo) -> str:
        _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True,
                                quiet=True, max_file_size=MAX_UPLOAD_SIZE)
        launched.append(demo)
        return url

    yield launch
    for demo in launched:
        demo.close()


