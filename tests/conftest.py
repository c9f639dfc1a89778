"""Shared fixtures: the CamVid pairs shipped in tests/fixtures, and a small real bundle."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAMVID_FIXTURE = FIXTURES / "camvid"


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


def make_tiny_bundle(bundle_dir: Path, threshold: float = 0.5, seed: int = 0) -> Path:
    """A real, untrained compact U-Net written as a bundle by the training code."""
    import keras

    from demo.bundle import BundleConfig, DatasetInfo, TargetClass
    from training.bundle import write_bundle
    from training.models import build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(base_filters=4)
    config = BundleConfig(architecture="unet", input_size=(180, 240), resize="keep_aspect", stride=16,
                          target_class=TargetClass(8, "car"), threshold=threshold,
                          dataset=DatasetInfo(name="CamVid (SegNet layout)"), metrics={"val": {"iou": 0.5}})
    return write_bundle(bundle_dir, model, config)


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture(scope="module")
def tiny_bundle(tiny_bundle_dir):
    """The tiny bundle loaded, one per test module (tests may change its notice or config and restore it)."""
    from demo.bundle import load_bundle

    return load_bundle(tiny_bundle_dir)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


@contextmanager
def running_app_py(bundle_dir: Path, port: int, log: Path, startup_timeout_s: float = 180):
    """`python app.py` serving `bundle_dir` on 127.0.0.1:`port`, as a Space starts it (output in `log`).

    Yields the server process and the app's /config once it answers; terminates it afterwards.
    """
    import httpx

    environment = {**os.environ, "MODEL_DIR": str(bundle_dir), "GRADIO_SERVER_PORT": str(port)}
    environment.pop("GRADIO_SERVER_NAME", None)
    with open(log, "w") as output:
        server = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=environment,
                                  stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout_s
        while time.monotonic() < deadline and server.poll() is None:
            try:
                config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=5).json()
                break
            except httpx.HTTPError:
                time.sleep(1)
        else:
            pytest.fail(f"app.py did not come up on port {port}:\n{log.read_text()[-3000:]}")
        yield server, config
    finally:
        server.terminate()
        server.wait(timeout=30)
