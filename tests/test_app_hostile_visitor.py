"""The app probed as a hostile visitor would, over HTTP, with the events the page hides too.

Each test sends what such a visitor would: server paths without Gradio's "meta" field,
oversized photos from many sessions, aborted uploads and a folder where a file belongs, a
session flooding the queue, thresholds that are not numbers from 0 to 1.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from demo import ui
from demo.safeguards import UNREADABLE_UPLOAD
from demo.examples import EXAMPLES, EXAMPLES_DIR
from demo.ui import MAX_KEPT_BYTES, MAX_WAITING_PER_SESSION, build_demo
from helpers import CAMVID_FIXTURE, running_app_py

SERVER_IMAGE = sorted((CAMVID_FIXTURE / "train").glob("*.png"))[0]  # on the server, never uploaded
MEBIBYTE = 2**20


@pytest.fixture(scope="module")
def upload_folder(tmp_path_factory) -> Path:
    """Gradio's upload folder for this module's apps, apart from other tests' (the sweep test ages files)."""
    folder = tmp_path_factory.mktemp("uploads")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GRADIO_TEMP_DIR", str(folder))
        yield folder


@pytest.fixture(scope="module")
def app_url(upload_folder, launch_app, tiny_bundle) -> str:
    return launch_app(build_demo(tiny_bundle))


# --- talking to the app as a client without gradio_client would --------------------------------

def event_ids(url: str) -> dict[str, int]:
    """Every event's api_name (the page's hidden ones too) and the fn_index that calls it."""
    config = httpx.get(f"{url}config", timeout=30).json()
    return {dependency["api_name"]: dependency["id"] for dependency in config["dependencies"]}


def upload(url: str, path: Path) -> str:
    response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, path.read_bytes())}, timeout=60)
    response.raise_for_status()
    return response.json()[0]


def post_json(url: str, payload: dict) -> httpx.Response:
    # json.dumps, unlike httpx's json=, writes NaN and Infinity, which an attacker can send.
    return httpx.post(url, content=json.dumps(payload), headers={"Content-Type": "application/json"}, timeout=30)


def call_segment(url: str, image, threshold=0.5) -> tuple[str, object]:
    """POST /gradio_api/call/segment as the issue's curl did: ("complete", outputs) or ("error", message)."""
    response = post_json(f"{url}gradio_api/call/segment", {"data": [image, threshold]})
    response.raise_for_status()
    return segment_result(url, response.json()["event_id"])


def segment_result(url: str, event_id: str) -> tuple[str, object]:
    text = httpx.get(f"{url}gradio_api/call/segment/{event_id}", timeout=300).text
    event, data = None, None
    for line in text.splitlines():
        if line.startswith("event:"):
            event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data = json.loads(line.removeprefix("data:"))
    return event, data["error"] if event == "error" else data


def run_event(url: str, fn_index: int, data: list, session: str) -> dict:
    """Queue one event as the page does (any event, hidden or not) and return its output."""
    joined = post_json(f"{url}gradio_api/queue/join",
                       {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                        "trigger_id": None})
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session},
                      timeout=300) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line.removeprefix("data:"))
                if message.get("msg") == "process_completed" and message.get("event_id") == event_id:
                    return message["output"]
    raise AssertionError(f"no answer to event {fn_index} of session {session}")


def file_data(path: str | Path, meta: bool = False) -> dict:
    return {"path": str(path), **({"meta": {"_type": "gradio.FileData"}} if meta else {})}


def png(folder: Path, height: int, width: int) -> Path:
    path = folder / f"photo_{height}x{width}.png"
    Image.new("RGB", (width, height), (90, 90, 90)).save(path)
    return path


# --- 1. only the app's own uploads are opened ----------------------------------------------------

def server_paths(upload_folder: Path, tmp_path: Path) -> dict[str, str]:
    """What an attacker names instead of an upload; the ones inside the upload folder are planted."""
    planted = upload_folder / f"planted-{tmp_path.name}"
    planted.mkdir()
    (planted / "link.png").symlink_to(SERVER_IMAGE)
    (planted / "folder.png").mkdir()
    return {
        "an image elsewhere on the server": str(SERVER_IMAGE),
        "the system password file": "/etc/passwd",
        "a path that does not exist": "/etc/no-such-file.png",
        "a relative path": os.path.relpath(SERVER_IMAGE),
        "a file: URL": f"file://{SERVER_IMAGE}",
        "a '..' escape from the upload folder": f"{upload_folder}{'/..' * 12}{SERVER_IMAGE}",
        "a link in the upload folder to a server image": str(planted / "link.png"),
        "a folder in the upload folder": str(planted / "folder.png"),
        "the upload folder itself": str(upload_folder),
    }


def test_the_api_opens_no_server_path_and_says_nothing_about_it(app_url, upload_folder, tmp_path):
    uploaded = upload(app_url, SERVER_IMAGE)
    assert call_segment(app_url, file_data(uploaded))[0] == "complete", "an upload named without meta works"

    for what, path in server_paths(upload_folder, tmp_path).items():
        assert call_segment(app_url, file_data(path)) == ("error", UNREADABLE_UPLOAD), what


def test_the_pages_hidden_network_event_opens_no_server_path(app_url, upload_folder, tmp_path):
    run_network = event_ids(app_url)["run_network"]
    uploaded = upload(app_url, SERVER_IMAGE)
    assert run_event(app_url, run_network, [file_data(uploaded), None], "hidden-upload").get("error") is None

    for what, path in server_paths(upload_folder, tmp_path).items():
        assert run_event(app_url, run_network, [file_data(path), None], f"hidden-{hash(what)}")["error"] \
            == UNREADABLE_UPLOAD, what


def test_a_server_path_with_meta_is_refused_by_gradio_with_one_answer_whether_it_exists_or_not(app_url):
    answers = {call_segment(app_url, file_data(path, meta=True)) for path in ["/etc/passwd", "/etc/no-such-file"]}
    assert len(answers) == 1 and next(iter(answers))[0] == "error"


# --- 2. bounded memory: what sessions keep, and what one request may cost ------------------------

OVERSIZED_SESSIONS = 6
OVERSIZED_SIDE = 7000  # 49 MP: under the pixel limit, 147 MB decoded; the PNG is a few hundred KB


def resident_memory(process: psutil.Process) -> int:
    return sum(each.memory_info().rss for each in [process, *process.children(recursive=True)])


def test_memory_after_many_sessions_of_oversized_photos_stays_within_the_kept_budget(
        tiny_bundle_dir, tmp_path, unused_port, monkeypatch, capsys):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    big = png(tmp_path, OVERSIZED_SIDE, OVERSIZED_SIDE)
    with running_app_py(tiny_bundle_dir, unused_port, tmp_path / "app.log") as (server, _):
        url = f"http://127.0.0.1:{unused_port}/"
        events = event_ids(url)
        small, big_upload = upload(url, png(tmp_path, 360, 480)), upload(url, big)
        assert big_upload.startswith(str(tmp_path / "uploads")), "app.py keeps GRADIO_TEMP_DIR when set"
        assert run_event(url, events["run_network"], [file_data(small), None], "warm-up").get("error") is None
        before = resident_memory(psutil.Process(server.pid))

        for session in range(OVERSIZED_SESSIONS):
            output = run_event(url, events["run_network"], [file_data(big_upload), None], f"big-{session}")
            assert output.get("error") is None, output
        after = resident_memory(psutil.Process(server.pid))

        slider = [None, 0.5, 0.5, "#ff2828"]
        latest = run_event(url, events["redraw"], slider, f"big-{OVERSIZED_SESSIONS - 1}")
        evicted = run_event(url, events["redraw"], slider, "big-0")

        strip = upload(url, png(tmp_path, 1, 65_500))
        started = time.monotonic()
        refused = run_event(url, events["run_network"], [file_data(strip), None], "strip")
        strip_seconds = time.monotonic() - started

    with capsys.disabled():
        print(f"\n{OVERSIZED_SESSIONS} sessions of a {OVERSIZED_SIDE}x{OVERSIZED_SIDE} photo: server RSS "
              f"{before / MEBIBYTE:.0f} MiB before, {after / MEBIBYTE:.0f} MiB after "
              f"(+{(after - before) / MEBIBYTE:.0f} MiB; kept budget {MAX_KEPT_BYTES / MEBIBYTE:.0f} MiB); "
              f"1x65500 strip refused in {strip_seconds:.2f} s")
    unbounded = OVERSIZED_SESSIONS * OVERSIZED_SIDE**2 * 3
    assert after - before < MAX_KEPT_BYTES + 256 * MEBIBYTE < unbounded
    assert latest.get("error") is None and "At threshold 0.50" in latest["data"][2]
    assert evicted["error"] == "The server made room for other photos; please upload this one again."
    assert refused["error"] == ("The image is 65500x1 pixels; its long side may be at most 20 times its short side. "
                                "Please crop it to a less elongated picture.")
    assert strip_seconds < 5


# --- 3. the upload folder is swept: aborted uploads, old files, a folder where a file belongs -----

def abort_an_upload(url: str, declared_bytes: int, sent_bytes: int) -> None:
    """Start a multipart upload of `declared_bytes`, send `sent_bytes` of it and hang up."""
    address = httpx.URL(url)
    boundary = "an-upload-that-never-ends"
    with socket.create_connection((address.host, address.port)) as connection:
        connection.sendall(
            f"POST /gradio_api/upload HTTP/1.1\r\nHost: {address.host}:{address.port}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared_bytes}\r\n\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n".encode() + b"\0" * sent_bytes)
        time.sleep(1)  # the server writes what it received to its partial file


def top_level_files(folder: Path) -> list[Path]:
    return [path for path in folder.iterdir() if path.is_file()]


def wait_until(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.2)


def test_the_sweep_removes_aborted_uploads_and_old_files_and_survives_a_folder_sent_as_a_photo(
        launch_app, tiny_bundle, upload_folder, tmp_path, monkeypatch):
    folder = tmp_path / "own-uploads"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(folder))
    monkeypatch.setattr(ui, "CACHE_SWEEP_INTERVAL_S", 0.5)
    monkeypatch.setattr(ui, "PARTIAL_UPLOAD_IDLE_S", 3)
    monkeypatch.setattr(ui, "CACHE_MAX_AGE_S", 60)
    url = launch_app(build_demo(tiny_bundle))
    examples = [path for path in folder.rglob("*.png") if path.name in {p.name for p in EXAMPLES_DIR.glob("*.png")}]
    assert examples, "the page's examples are copied into the upload folder"
    an_hour_ago = time.time() - 3600
    old_upload = folder / "an-old-upload" / "photo.png"
    old_upload.parent.mkdir()
    old_upload.write_bytes(SERVER_IMAGE.read_bytes())
    for path in [*examples, old_upload]:
        os.utime(path, (an_hour_ago, an_hour_ago))
    fresh_upload = Path(upload(url, SERVER_IMAGE))

    for _ in range(3):
        abort_an_upload(url, declared_bytes=20 * MEBIBYTE, sent_bytes=2 * MEBIBYTE)
    partial_uploads = top_level_files(folder)
    assert len(partial_uploads) == 3 and all(path.name.startswith("tmp") for path in partial_uploads)
    assert all(path.stat().st_size > MEBIBYTE for path in partial_uploads)

    # A folder named as the photo (with Gradio's meta, so Gradio itself notes it as a file to delete).
    decoy = folder / "a-folder" / "photo.png"
    decoy.mkdir(parents=True)
    assert call_segment(url, file_data(decoy, meta=True)) == ("error", UNREADABLE_UPLOAD)

    wait_until(lambda: not top_level_files(folder) and not old_upload.parent.exists() and not decoy.exists(),
               timeout_s=30, what="the partial uploads, the old upload and the decoy folder are swept")
    abort_an_upload(url, declared_bytes=20 * MEBIBYTE, sent_bytes=MEBIBYTE)
    assert top_level_files(folder), "a new partial upload"
    wait_until(lambda: not top_level_files(folder), timeout_s=30, what="the sweep, still running, removes it too")

    assert fresh_upload.is_file(), "an upload in use stays"
    assert all(path.is_file() for path in examples), "the page's examples stay, however old"


# --- 4. one session cannot fill the queue ---------------------------------------------------------

def test_one_session_cannot_fill_the_queue_and_others_are_still_served(app_url, tmp_path):
    slow = {"data": [file_data(upload(app_url, png(tmp_path, 5000, 5000))), 0.5], "session_hash": "greedy"}
    quick = {"data": [file_data(upload(app_url, SERVER_IMAGE)), 0.5], "session_hash": "greedy"}

    answers = [post_json(f"{app_url}gradio_api/call/segment", slow)]
    answers += [post_json(f"{app_url}gradio_api/call/segment", quick) for _ in range(MAX_WAITING_PER_SESSION + 3)]
    other = post_json(f"{app_url}gradio_api/call/segment", {**quick, "session_hash": "someone-else"})

    accepted = [answer.json()["event_id"] for answer in answers if answer.status_code == 200]
    refused = [answer for answer in answers if answer.status_code != 200]
    assert MAX_WAITING_PER_SESSION <= len(accepted) <= MAX_WAITING_PER_SESSION + 1, "one running, the rest waiting"
    assert refused and all(answer.status_code == 503 for answer in refused)
    assert refused[0].json()["detail"] == (f"This session already has {MAX_WAITING_PER_SESSION} requests waiting; "
                                           "please wait for them to finish.")
    assert other.status_code == 200
    # Queued last on the one network worker: when it is answered, the greedy session's are done too.
    assert segment_result(app_url, other.json()["event_id"])[0] == "complete"


# --- 5. thresholds (and the hidden events' opacity) ------------------------------------------------

NOT_A_UNIT_NUMBER = [("abc", '"abc"'), (None, "null"), ([0.5], "[0.5]"), (float("nan"), "NaN"),
                     (float("inf"), "Infinity"), (-1, "-1"), (2, "2"), (1.5, "1.5"), (True, "true")]


@pytest.mark.parametrize("value, shown", NOT_A_UNIT_NUMBER, ids=[shown for _, shown in NOT_A_UNIT_NUMBER])
def test_a_threshold_that_is_not_a_number_from_0_to_1_gets_a_clear_message(app_url, value, shown):
    uploaded = upload(app_url, SERVER_IMAGE)
    assert call_segment(app_url, file_data(uploaded), value) == (
        "error", f"The threshold must be a number from 0 to 1; got {shown}.")


def test_the_hidden_slider_event_checks_threshold_and_opacity(app_url):
    events = event_ids(app_url)
    session = "slider-checks"
    assert run_event(app_url, events["run_network"], [file_data(upload(app_url, SERVER_IMAGE)), None],
                     session).get("error") is None

    def redraw(threshold, opacity) -> dict:
        return run_event(app_url, events["redraw"], [None, threshold, opacity, "#ff2828"], session)

    assert redraw("abc", 0.5)["error"] == 'The threshold must be a number from 0 to 1; got "abc".'
    assert redraw(0.5, float("nan"))["error"] == "The opacity must be a number from 0 to 1; got NaN."
    assert redraw(0.5, [1])["error"] == "The opacity must be a number from 0 to 1; got [1]."
    for threshold in (0, 1, 0.25):
        drawn = redraw(threshold, 1)
        assert drawn.get("error") is None and f"At threshold {threshold:.2f}" in drawn["data"][2]


def test_the_hidden_example_event_checks_which_example_and_the_sliders(app_url):
    show_example = event_ids(app_url)["show_example"]

    def choose(index, threshold=0.5) -> dict:
        return run_event(app_url, show_example, [index, None, threshold, 0.5, "#ff00ff"], "examples")

    for index in (-1, len(EXAMPLES), "0", 0.0, True, None, [0]):
        assert choose(index)["error"] == "There is no such example.", index
    assert choose(0, "abc")["error"] == 'The threshold must be a number from 0 to 1; got "abc".'
    chosen = choose(len(EXAMPLES) - 1)
    assert chosen.get("error") is None and chosen["data"][3].startswith(f"Example: {EXAMPLES[-1].scene}")
