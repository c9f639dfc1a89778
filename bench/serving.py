"""The app as a Space runs it: `python app.py` in its own process, asked over HTTP by gradio_client.

Cold start is process start to the first successful /segment answer; memory is the peak
resident set of the app's process and its children; load is N parallel callers for a
fixed time on loopback.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.timing import percentile

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_S = 300
MEMORY_SAMPLE_INTERVAL_S = 0.05
RETRY_INTERVAL_S = 0.1


@dataclass(frozen=True)
class ColdStart:
    seconds: list[float]  # one per launch
    peak_rss_mib: float  # the largest over the launches, up to the first answer


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
    """Samples the resident memory of a process and all its children in a thread; keeps the peak."""

    def __init__(self, pid: int):
        import psutil

        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.peak_bytes = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        import psutil

        while not self._stop.is_set():
            try:
                family = [self._process, *self._process.children(recursive=True)]
                total = 0
                for process in family:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        total += process.memory_info().rss
                self.peak_bytes = max(self.peak_bytes, total)
            except psutil.NoSuchProcess:
                return
            self._stop.wait(MEMORY_SAMPLE_INTERVAL_S)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


@contextlib.contextmanager
def running_app(bundle_dir: Path, log_path: Path):
    """`python app.py` serving `bundle_dir` on a free loopback port; yields (process, url, start time)."""
    port = free_port()
    environment = {**os.environ, "MODEL_DIR": str(bundle_dir), "GRADIO_SERVER_PORT": str(port),
                   "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
                   "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(log_path, "w") as log:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO_ROOT, env=environment,
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


def client_for(url: str, downloads: Path):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(downloads), analytics_enabled=False)


def segment(client, photo_path: Path, threshold: float):
    from gradio_client import handle_file

    return client.predict(handle_file(str(photo_path)), threshold, api_name="/segment")


def first_answer(process, url: str, photo_path: Path, downloads: Path, log_path: Path) -> None:
    """Wait until the app answers /segment once; raise with its log if it dies or never does."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "no attempt"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"app.py exited with status {process.returncode}:\n{log_path.read_text()[-2000:]}")
        try:
            client = client_for(url, downloads)
        except Exception as error:  # not listening yet
            last_error = f"{type(error).__name__}: {error}"
            time.sleep(RETRY_INTERVAL_S)
            continue
        try:
            segment(client, photo_path, 0.5)
            return
        finally:
            client.close()
    raise RuntimeError(f"app.py gave no answer in {STARTUP_TIMEOUT_S} s ({last_error}):\n"
                       f"{log_path.read_text()[-2000:]}")


def apply_load(clients: list, photo_path: Path, duration_s: float, memory: PeakMemory) -> LoadLevel:
    """Every client asking /segment again as soon as it has its answer, for `duration_s`."""
    memory.peak_bytes = 0
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


def measure_serving(bundle_dir: Path, photo_path: Path, launches: int, load_levels: tuple[int, ...],
                    load_seconds: float, scratch: Path) -> tuple[ColdStart, list[LoadLevel]]:
    """Cold-start the app `launches` times; put the last one under each load level."""
    downloads = scratch / "client_downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    # gradio_client 2.7 downloads each answer into a new folder of the system temp dir and leaves
    # it there, empty, once the file is moved to `downloads`: keep those folders in the scratch dir.
    previous_temp_dir, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        seconds, peak_mib, levels = [], 0.0, []
        for launch in range(launches):
            log_path = scratch / f"app_{launch}.log"
            with running_app(bundle_dir, log_path) as (process, url, started):
                with PeakMemory(process.pid) as memory:
                    first_answer(process, url, photo_path, downloads, log_path)
                    seconds.append(time.perf_counter() - started)
                    peak_mib = max(peak_mib, memory.peak_mib)
                    if launch == launches - 1:
                        levels = measure_load(url, photo_path, load_levels, load_seconds, downloads, memory)
    finally:
        tempfile.tempdir = previous_temp_dir
    return ColdStart(seconds, peak_mib), levels
