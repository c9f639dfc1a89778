"""What the test modules share (fixtures are in conftest.py): paths, the tiny bundle, a running app,
images of every kind an upload may be, and a fake Hub client. Test modules import from here, never
from each other."""
from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import httpx2
import numpy as np
import pytest
from huggingface_hub import CommitInfo, HfApi
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from demo.bundle import BundleConfig, DatasetInfo, TargetClass

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CAMVID_FIXTURE = FIXTURES / "camvid"


# --- bundles and configs ---------------------------------------------------------------------

def serving_config(input_size: tuple[int, int] = (360, 480), resize: str = "keep_aspect", stride: int = 16,
                   threshold: float = 0.5, **details) -> BundleConfig:
    """A compact U-Net's bundle config: the feed geometry and threshold the engine reads, and any
    other field of `BundleConfig` given (`test_time_flip`, `metrics`, `dataset`, ...)."""
    return BundleConfig(architecture="unet", input_size=input_size, resize=resize, stride=stride,
                        target_class=TargetClass(8, "car"), threshold=threshold, **details)


def make_tiny_bundle(bundle_dir: Path, threshold: float = 0.5, seed: int = 0) -> Path:
    """A real, untrained compact U-Net written as a bundle by the training code."""
    import keras

    from training.bundle import write_bundle
    from training.models import build_unet

    keras.utils.set_random_seed(seed)
    model = build_unet(base_filters=4)
    config = BundleConfig(architecture="unet", input_size=(180, 240), resize="keep_aspect", stride=16,
                          target_class=TargetClass(8, "car"), threshold=threshold,
                          dataset=DatasetInfo(name="CamVid (SegNet layout)"), metrics={"val": {"iou": 0.5}})
    return write_bundle(bundle_dir, model, config)


def red_channel_model():
    """Probability ~1 where red is 255 and ~0 where red is 0, whatever green and blue are."""
    import keras

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    outputs = conv(inputs)
    conv.set_weights([np.array([1.0, 0.0, 0.0], np.float32).reshape(1, 1, 3, 1), np.array([-127.5], np.float32)])
    return keras.Model(inputs, outputs)


# --- data folders ----------------------------------------------------------------------------

def plain_folder(camvid_dir, folder, mask=lambda labels: np.where(labels == 8, 255, 0), val_folder=False):
    """The six fixture pairs as anyone's own data: JPEG images in images/, `mask(labels)` as 8-bit PNGs in
    masks/ (default: car as 255, the rest 0); with `val_folder`, the val pairs in val/images and val/masks."""
    from training.data import find_pairs

    for split in ("train", "val"):
        base = folder / "val" if split == "val" and val_folder else folder
        (base / "images").mkdir(parents=True, exist_ok=True)
        (base / "masks").mkdir(exist_ok=True)
        for pair in find_pairs(camvid_dir, split):
            Image.open(pair.image).convert("RGB").save(base / "images" / f"{pair.stem}.jpg", quality=95)
            labels = np.asarray(Image.open(pair.label))
            Image.fromarray(mask(labels).astype(np.uint8)).save(base / "masks" / f"{pair.stem}.png")
    return folder


# --- the app as a server ---------------------------------------------------------------------

def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def segment(client, path: Path, threshold: float = 0.5):
    """One /segment call through gradio_client: (overlay, mask, coverage)."""
    from gradio_client import handle_file

    return client.predict(handle_file(str(path)), threshold, api_name="/segment")


# --- every kind of upload --------------------------------------------------------------------

def png_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **options)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, **options)
    return buffer.getvalue()


def grayscale_png(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((30, 50), 77, np.uint8)).save(path)
    return path, (30, 50), [77, 77, 77]


def transparent_rgba_png(tmp_path):
    pixels = np.zeros((30, 50, 4), np.uint8)
    pixels[..., :3] = (10, 200, 30)  # colour under fully transparent pixels must not show
    path = tmp_path / "transparent.png"
    Image.fromarray(pixels, "RGBA").save(path)
    return path, (30, 50), [255, 255, 255]


def palette_png(tmp_path):
    image = Image.new("P", (50, 30), 1)
    image.putpalette([0, 0, 0, 12, 34, 56] + [0] * 762)
    path = tmp_path / "palette.png"
    image.save(path)
    return path, (30, 50), [12, 34, 56]


def sixteen_bit_png(tmp_path):
    image = Image.fromarray(np.full((30, 50), 200 * 257, np.uint16))
    assert image.mode == "I;16"
    path = tmp_path / "sixteen_bit.png"
    image.save(path)
    return path, (30, 50), [200, 200, 200]


def cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(jpeg_bytes(Image.new("CMYK", (50, 30), (0, 255, 255, 0))))  # pure red in print
    return path, (30, 50), [255, 0, 0]


def animated_gif(tmp_path):
    frames = [Image.new("RGB", (50, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path, (30, 50), [255, 0, 0]  # the first frame


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def decompression_bomb_png(side: int = 30_000) -> bytes:
    """A valid 1-bit PNG of side x side black pixels: about 100 KB on disk, 900 MP decoded."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1 bit, grayscale
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)  # filter byte + packed pixels
    pixels = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", pixels) + png_chunk(b"IEND", b"")


def camvid_png_bytes(camvid_dir) -> bytes:
    return sorted((camvid_dir / "val").glob("*.png"))[0].read_bytes()


# --- the Hub ---------------------------------------------------------------------------------

SECRET = "hf_testSECRETtoken0123456789abcdef"
COMMIT_SHA = "0123456789abcdef0123456789abcdef01234567"
# Any HfApi call the fake does not record would go here and fail: nothing listens on port 9.
DEAD_ENDPOINT = "http://127.0.0.1:9"


class RecordingHubApi(HfApi):
    """Records what push asks the Hub for, answering like the Hub would (or failing as told)."""

    def __init__(self, fail_with: Exception | None = None):
        super().__init__(endpoint=DEAD_ENDPOINT, token=SECRET)
        self.calls: list[tuple[str, dict]] = []
        self.uploaded_files: list[str] = []
        self.fail_with = fail_with

    def _record(self, name: str, **arguments) -> None:
        self.calls.append((name, arguments))
        if self.fail_with is not None:
            raise self.fail_with

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id=repo_id, **kwargs)

    def create_branch(self, repo_id, **kwargs):
        self._record("create_branch", repo_id=repo_id, **kwargs)

    def upload_folder(self, **kwargs):
        self._record("upload_folder", **kwargs)
        self.uploaded_files = sorted(path.name for path in Path(kwargs["folder_path"]).iterdir())
        return CommitInfo(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/{COMMIT_SHA}",
                          commit_message=kwargs["commit_message"], commit_description="", oid=COMMIT_SHA)

    @property
    def call_names(self) -> list[str]:
        return [name for name, _ in self.calls]


def unauthorized(message: str) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(message, response=httpx2.Response(401, request=request))


def assert_secret_not_shown(capsys, caplog) -> tuple[str, str]:
    out, err = capsys.readouterr()
    assert SECRET not in out and SECRET not in err
    assert SECRET not in caplog.text
    return out, err


def hub_unavailable_reason() -> str | None:
    if not os.environ.get("HF_TOKEN"):
        return "HF_TOKEN is not set"
    try:
        socket.create_connection(("huggingface.co", 443), timeout=5).close()
    except OSError as error:
        return f"huggingface.co is not reachable ({error})"
    return None
