"""The app as a Space runs it: `python app.py` in its own process, asked over HTTP by gradio_client.

Cold start is process start to the first successful /segment answer; then the first photo of
each shape class (4:3, 3:4, 16:9, 9:16) and warm photos of each. Memory is the resident set of
the app's process and its children: the peak through all of that, and the steady level once
it is done. Each launch serves the bundle two ways, side by side: with the graphs it carries,
and with those graphs removed (the app converts model.keras at start, as every bundle was
served before). Load is N parallel callers for a fixed time on loopback.

The full benchmark runs the app with the packages a Space installs (`space_interpreter`:
requirements.txt alone), not this .venv: the dev extras change what a request costs (Gradio
imports matplotlib at every request when it is installed, slowing the first).
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.timing import percentile

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 300
RETRY_INTERVAL_S = 0.05


# Photo shapes phones and cameras send, made from the benchmark photo (4:3) by turning and cropping it.
SHAPE_CLASSES = ("4:3", "3:4", "16:9", "9:16")
CARRIED = "graphs the bundle carries"
CONVERTED = "converted at start (the bundle without its graphs)"
SETTLE_S = 1.0  # idle time before the steady memory is read


@dataclass
class StartUp:
    """One way of serving the bundle, over several launches."""

    variant: str
    seconds: list[float] = field(default_factory=list)  # process start to the first answer, one per launch
    peak_rss_mib: float = 0.0  # the largest over the launches, from start to the last photo
    steady_rss_mib: float = 0.0  # after the photos of every shape, idle (last launch)
    first_ms: dict[str, float] = field(default_factory=dict)  # shape class -> its first photo (last launch)
    warm_ms: dict[str, float] = field(default_factory=dict)  # shape class -> median of warm photos
    loaded_tensorflow: bool = False  # TensorFlow's libraries mapped into the app's process


def shape_class_photos(photo_path: Path, folder: Path) -> dict[str, Path]:
    """The benchmark photo (4:3) as each shape class: turned for 3:4, cropped to 16:9 (centre) and turned."""
    from PIL import Image

    rgb = np.asarray(Image.open(photo_path).convert("RGB"))
    height, width = rgb.shape[:2]
    wide = rgb[(height - width * 9 // 16) // 2:][:width * 9 // 16]
    shapes = {"4:3": rgb, "3:4": np.rot90(rgb), "16:9": wide, "9:16": np.rot90(wide)}
    paths = {}
    for name, pixels in shapes.items():
        paths[name] = folder / f"photo_{name.replace(':', 'x')}.png"
        Image.fromarray(np.ascontiguousarray(pixels)).save(paths[name])
    return paths


def without_graphs(bundle_dir: Path, folder: Path) -> Path:
    """A copy of the bundle as it was before it carried graphs: the app converts its model.keras."""
    from training.bundle import finishing_bundle
    from training.graphs import GRAPH_SUFFIXES

    copy = folder / "bundle_without_graphs"
    with finishing_bundle(copy, start_from=bundle_dir, leave_out=tuple(f"*{suffix}" for suffix in GRAPH_SUFFIXES)) as draft:
        draft.config.serving_graphs = None
    return copy


def family_rss_mib(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(member.memory_info().rss for member in [process, *process.children(recursive=True)]) / 2**20


def loaded_tensorflow(pid: int) -> bool:
    """Whether TensorFlow's shared libraries are mapped into the process (imported at any point)."""
    import psutil

    return any(f"{os.sep}tensorflow{os.sep}" in region.path for region in psutil.Process(pid).memory_maps())


@dataclass
class LoadLevel:
    callers: int
    seconds: float  # from the first request to the last answer
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    peak_rss_mib: float = 0.0

    @property
    def requests_per_s(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def latency_ms(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction) if self.latencies_ms else float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PeakMemory:
    """The peak resident memory of a process and its children while the block runs, read from the
    kernel's own high-water mark (VmHWM in /proc/PID/status, reset on entry through
    /proc/PID/clear_refs): exact, and nothing polls the app. (A thread sampling it, as before
    2026-11-29 22:45, slowed the app's start measurably on 2 cores.) With children, the sum of their
    peaks: an upper bound, since they need not peak at once."""

    def __init__(self, pid: int):
        import psutil

        self._process = psutil.Process(pid)

    def _family(self) -> list:
        return [self._process, *self._process.children(recursive=True)]

    def reset(self) -> None:
        for member in self._family():
            with contextlib.suppress(OSError):
                Path(f"/proc/{member.pid}/clear_refs").write_text("5")

    @property
    def peak_mib(self) -> float:
        """The peak since the last reset, in MiB (the process must still be running)."""
        total = 0
        for member in self._family():
            with contextlib.suppress(OSError):
                status = Path(f"/proc/{member.pid}/status").read_text()
                total += int(status.split("VmHWM:")[1].split()[0]) * 1024
        return total / 2**20

    def __enter__(self):
        self.reset()
        return self

    def __exit__(self, *exc):
        return None


def space_interpreter(folder: Path) -> str:
    """The Python of a venv with requirements.txt alone installed on the Python the Space declares
    (`training.deploy_space.install_space_venv`, as scripts/rehearse_space.py makes it), built in
    `folder` once per content of requirements.txt (much quicker with pip's cache warm)."""
    from training.deploy_space import install_space_venv, space_python

    requirements = REPO_ROOT / "requirements.txt"
    venv = Path(folder) / f"space-venv-{hashlib.sha256(requirements.read_bytes()).hexdigest()[:12]}"
    python, complete = venv / "bin" / "python", venv / ".installed"
    if not complete.exists():
        shutil.rmtree(venv, ignore_errors=True)
        install_space_venv(venv, requirements, space_python()[0])
        complete.touch()
    return str(python)


@contextlib.contextmanager
def running_app(bundle_dir: Path, log_path: Path, python: str = sys.executable):
    """`python app.py` serving `bundle_dir` on a free loopback port; yields (process, url, start time)."""
    port = free_port()
    environment = {**os.environ, "MODEL_DIR": str(bundle_dir), "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen([python, "app.py"], cwd=REPO_ROOT, env=environment,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, f"http://127.0.0.1:{port}/", started
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """The TLS context httpx builds for `verify=True` (certifi's CA bundle), built once. Given it as
    `ssl_verify`, gradio_client verifies an https:// Space just the same, but no longer builds a new
    one (reading the whole bundle: tens of milliseconds) for each of a request's five HTTP calls, even
    to an http:// address: most of what a request cost beyond the app's own work (bench/request_profile.py)."""
    import certifi

    return ssl.create_default_context(cafile=certifi.where())


def client_for(url: str, downloads: Path):
    """A gradio_client Client as a careful caller makes one: one TLS context for all its calls."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False,
                  ssl_verify=shared_tls_context())


def segment(client, photo_path: Path, threshold: float):
    from gradio_client import handle_file

    return client.predict(handle_file(str(photo_path)), threshold, api_name="/segment")


def first_answer(process, url: str, photo_path: Path, downloads: Path, log_path: Path) -> tuple[float, float]:
    """Wait until the app serves its page config, then ask /segment once as a visitor's page would;
    return when the answer came (time.perf_counter(), before the client is closed: closing takes up to
    a second) and that request's milliseconds (the first photo it served). Raise with its log if it dies
    or never does. Readiness is polled with a plain GET: a full client handshake per attempt (as before
    2026-11-29 22:40) kept both cores busy while the app started and added about a second."""
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with status {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}config", timeout=5).status_code == 200:
                break
            last_error = "the page config is not served yet"
        except httpx.HTTPError as error:  # not listening yet
            last_error = f"{type(error).__name__}: {error}"
        time.sleep(RETRY_INTERVAL_S)
    else:
        raise RuntimeError(f"app.py gave no answer in {STARTUP_TIMEOUT_S} s ({last_error}):\n"
                           f"{log_path.read_text()[-2000:]}")
    client = client_for(url, downloads)
    try:
        asked = time.perf_counter()
        segment(client, photo_path, 0.5)
        answered = time.perf_counter()
        return answered, 1000 * (answered - asked)
    finally:
        client.close()


def apply_load(clients: list, photo_path: Path, duration_s: float, memory: PeakMemory) -> LoadLevel:
    """Every client asking /segment again as soon as it has its answer, for `duration_s`."""
    memory.reset()
    level = LoadLevel(len(clients), seconds=0.0)
    start = time.perf_counter()
    deadline = start + duration_s

    def call_repeatedly(client):
        while time.perf_counter() < deadline:
            asked = time.perf_counter()
            try:
                segment(client, photo_path, 0.5)
                level.latencies_ms.append(1000 * (time.perf_counter() - asked))
            except Exception as error:  # counted and reported: the target is zero
                level.errors.append(f"{type(error).__name__}: {error}")

    threads = [threading.Thread(target=call_repeatedly, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    level.seconds = time.perf_counter() - start
    level.peak_rss_mib = memory.peak_mib
    return level


def measure_load(url: str, photo_path: Path, load_levels: tuple[int, ...], load_seconds: float, downloads: Path,
                 memory: PeakMemory) -> list[LoadLevel]:
    clients = [client_for(url, downloads) for _ in range(max(load_levels))]  # connected before any clock starts
    try:
        return [apply_load(clients[:callers], photo_path, load_seconds, memory) for callers in load_levels]
    finally:
        for client in clients:
            client.close()


def time_shape_classes(url: str, photos: dict[str, Path], first_4x3_ms: float, repeats: int, downloads: Path,
                       start_up: StartUp) -> None:
    """The first photo of each shape class after start (4:3's was the first answer), then warm ones."""
    client = client_for(url, downloads)
    try:
        start_up.first_ms = {"4:3": first_4x3_ms}
        for name in SHAPE_CLASSES[1:]:
            asked = time.perf_counter()
            segment(client, photos[name], 0.5)
            start_up.first_ms[name] = 1000 * (time.perf_counter() - asked)
        durations = {name: [] for name in SHAPE_CLASSES}
        for _ in range(repeats):  # interleaved, so a slow spell falls on every class alike
            for name in SHAPE_CLASSES:
                asked = time.perf_counter()
                segment(client, photos[name], 0.5)
                durations[name].append(1000 * (time.perf_counter() - asked))
        start_up.warm_ms = {name: percentile(values, 0.5) for name, values in durations.items()}
    finally:
        client.close()


def measure_serving(bundle_dir: Path, photo_path: Path, launches: int, repeats: int, load_levels: tuple[int, ...],
                    load_seconds: float, scratch: Path, python: str = sys.executable
                    ) -> tuple[list[StartUp], list[LoadLevel]]:
    """Launch the app (`python app.py`) `launches` times each way (carried graphs, converted at start),
    alternating; time the start, the shape classes and the memory; put the last launch with carried
    graphs under load."""
    downloads = scratch / "client_downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    photos = shape_class_photos(photo_path, scratch)
    bundles = {CARRIED: bundle_dir, CONVERTED: without_graphs(bundle_dir, scratch)}
    start_ups = {variant: StartUp(variant) for variant in bundles}
    # gradio_client 2.7 downloads each answer into a new folder of the system temp dir and leaves
    # it there, empty, once the file is moved to `downloads`: keep those folders in the scratch dir.
    previous_temp_dir, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        levels = []
        for launch in range(launches):
            for variant, served in bundles.items():
                start_up = start_ups[variant]
                log_path = scratch / f"app_{launch}_{'carried' if variant == CARRIED else 'converted'}.log"
                with running_app(served, log_path, python) as (process, url, started):
                    with PeakMemory(process.pid) as memory:
                        answered, first_ms = first_answer(process, url, photos["4:3"], downloads, log_path)
                        start_up.seconds.append(answered - started)
                        time_shape_classes(url, photos, first_ms, repeats, downloads, start_up)
                        start_up.peak_rss_mib = max(start_up.peak_rss_mib, memory.peak_mib)
                    time.sleep(SETTLE_S)
                    start_up.steady_rss_mib = family_rss_mib(process.pid)
                    start_up.loaded_tensorflow = loaded_tensorflow(process.pid)
                    if launch == launches - 1 and variant == CARRIED:
                        with PeakMemory(process.pid) as memory:
                            levels = measure_load(url, photo_path, load_levels, load_seconds, downloads, memory)
    finally:
        tempfile.tempdir = previous_temp_dir
    return list(start_ups.values()), levels
