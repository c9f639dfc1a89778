"""Rehearse the Space on this machine: what a Gradio Space does with the files the deploy uploads.

    .venv/bin/python scripts/rehearse_space.py [--python python3.11] [--keep]

1. copies exactly `training.deploy_space.space_files()` into a scratch folder (the deploy's own list);
2. makes a fresh venv with the Python the README front matter declares (python_version) and
   installs that folder's requirements.txt alone: no dev extras, so a module the app imports that
   only requirements-dev.txt brings fails here as it would on the Space;
3. starts `python app.py` there with GRADIO_SERVER_NAME=0.0.0.0 on a free port, with none of this
   repo on its path and no MODEL_* variables (it serves the default model it ships);
4. calls /segment with gradio_client (this .venv's) on an example photo and prints the answer;
5. calls /segment_video on a 2 s clip made from the example photos and prints what came back.

Prints the install time, the start-up time (process start to Gradio answering) and the first
/segment answer; exits 1 if any step fails, with the app's log. pip's own cache makes reruns faster.
Measured here (2 shared cores, warm pip cache): install 67-82 s, start-up 15-23 s, /segment 0.6-0.8 s;
/segment_video on its 20-frame clip 1.6 s (one run, nearly idle cores).
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from training.deploy_space import install_space_venv, space_python, stage_space  # noqa: E402
from training.push import PushError  # noqa: E402

START_TIMEOUT_S = 300
EXAMPLE_PHOTO = "demo/examples/0016E5_08017.png"


class RehearsalError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def app_environment(port: int) -> dict:
    """What a Space gives the app: its own folder and the Gradio address, nothing of this repo or session."""
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CACHE_HOME")
    environment = {key: os.environ[key] for key in keep if key in os.environ}
    environment.update(GRADIO_SERVER_NAME="0.0.0.0", GRADIO_SERVER_PORT=str(port), PYTHONUNBUFFERED="1",
                       GRADIO_ANALYTICS_ENABLED="False", HF_HUB_DISABLE_TELEMETRY="1")
    return environment


def wait_until_up(server: subprocess.Popen, url: str) -> None:
    import httpx

    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RehearsalError(f"app.py exited with status {server.returncode} before answering")
        try:
            if httpx.get(f"{url}/config", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RehearsalError(f"app.py did not answer at {url} within {START_TIMEOUT_S} s")


def first_segment(url: str, photo: Path) -> tuple[dict, str, str, float]:
    from gradio_client import Client, handle_file
    from PIL import Image

    client = Client(url, verbose=False)
    start = time.monotonic()
    overlay, mask, coverage = client.predict(handle_file(str(photo)), api_name="/segment")
    seconds = time.monotonic() - start
    with Image.open(mask) as image:
        mask_shape = f"{image.size[0]}x{image.size[1]} {image.mode}"
    with Image.open(overlay) as image:
        overlay_shape = f"{image.format} {image.size[0]}x{image.size[1]}"
    return coverage, overlay_shape, mask_shape, seconds


def first_clip(url: str, space: Path, scratch: Path) -> tuple[str, dict, float]:
    """/segment_video on a 2 s 480x360 clip (10 fps) of the example photos: (output facts, answer, seconds)."""
    import av
    import numpy as np
    from gradio_client import Client, handle_file
    from PIL import Image

    photos = [np.asarray(Image.open(path).convert("RGB").resize((480, 360)))
              for path in sorted((space / "demo" / "examples").glob("*.png"))]
    clip = scratch / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 480, 360, "yuv420p"
        for index in range(20):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(photos[index // 5 % len(photos)], format="rgb24")))
        container.mux(stream.encode(None))
    client = Client(url, verbose=False)
    start = time.monotonic()
    drawn, coverage = client.predict(handle_file(str(clip)), api_name="/segment_video")
    seconds = time.monotonic() - start
    with av.open(drawn) as container:
        video = container.streams.video[0]
        frames = sum(1 for _ in container.decode(video))
        facts = f"{video.codec_context.name} {video.codec_context.pix_fmt} {video.width}x{video.height}, {frames} frames"
    return facts, coverage, seconds


def rehearse(interpreter: str | None, keep: bool) -> int:
    began = time.monotonic()
    interpreter, version = space_python(interpreter)
    scratch = Path(tempfile.mkdtemp(prefix="space-rehearsal-"))
    space, venv, log = scratch / "space", scratch / "venv", scratch / "app.log"
    server = None
    try:
        files = stage_space(space)
        print(f"rehearsal: {len(files)} files from space_files() staged in {space}")
        seconds = install_space_venv(venv, space / "requirements.txt", interpreter)
        print(f"rehearsal: fresh venv with Python {version} ({interpreter}); requirements.txt alone installed "
              f"in {seconds:.1f} s")

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        start = time.monotonic()
        with open(log, "w") as output:
            server = subprocess.Popen([str(venv / "bin" / "python"), "app.py"], cwd=space, env=app_environment(port),
                                      stdout=output, stderr=subprocess.STDOUT)
        wait_until_up(server, url)
        print(f"rehearsal: python app.py (GRADIO_SERVER_NAME=0.0.0.0, port {port}) answered after "
              f"{time.monotonic() - start:.1f} s")
        coverage, overlay, mask, seconds = first_segment(url, space / EXAMPLE_PHOTO)
        print(f"rehearsal: first /segment on {EXAMPLE_PHOTO}: {coverage} (overlay {overlay}, mask {mask}) "
              f"in {seconds:.2f} s")
        facts, answer, seconds = first_clip(url, space, scratch)
        shares = [frame["coverage_percent"] for frame in answer["frames"]]
        print(f"rehearsal: /segment_video on a 2 s clip of the examples: {facts} in {seconds:.2f} s; coverage per "
              f"frame {min(shares):.2f}-{max(shares):.2f}%, notice {answer['notice']!r}")
        served = [line for line in log.read_text().splitlines() if " demo." in line][:3]  # the app's own log lines
        for line in served:
            print(f"rehearsal: app log: {line}")
        print(f"rehearsal: passed in {time.monotonic() - began:.0f} s (its scratch folder is removed in the background)")
        return 0
    except Exception as error:  # every failure is reported with the app's log, as the Space's Logs tab would
        print(f"rehearsal FAILED: {error}", file=sys.stderr)
        if log.exists():
            print(f"--- app log ({log}) ---\n{log.read_text()[-6000:]}", file=sys.stderr)
        keep = True
        return 1
    finally:
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
        if keep:
            print(f"rehearsal: kept {scratch}", file=sys.stderr)
        else:
            remove_in_background(scratch)


def remove_in_background(folder: Path) -> None:
    """Delete `folder` without waiting: the venv is 2 GB in 36,000 files, about a minute of disk time here."""
    subprocess.Popen(["rm", "-rf", "--", str(folder)], start_new_session=True,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--python", help="interpreter for the Space's venv (default: pythonX.Y of the front matter)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder (always kept on failure)")
    args = parser.parse_args(argv)
    try:
        return rehearse(args.python, args.keep)
    except (RehearsalError, PushError) as error:
        print(f"rehearsal FAILED: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
