"""The Hub round trip, honestly tested (docs/bundle.md, "The Hub").

The app's loader runs against `olah`, a real hub-compatible server, on loopback in offline mode,
serving a local git repository that holds two commits of a real bundle. huggingface_hub reads
HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE when it is imported, so each app-side step runs in a
fresh Python process with those set, as a Space starts. A live round trip against the real Hub
runs only when a token and the network are there.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from demo.bundle import CONFIG_FILE, MODEL_FILE
from demo.bundle_files import sha256_of
from demo.loading import resolve_bundle
from demo.ui import build_demo
from helpers import DEAD_ENDPOINT, REPO_ROOT, free_port, hub_unavailable_reason, make_tiny_bundle

OLAH_CLI = REPO_ROOT / ".olah-venv" / "bin" / "olah-cli"
REPO_ID = "carseg/tiny-unet"
STARTUP_TIMEOUT_S = 60

# The app side, run in its own process. argv: repo revision [repo revision ...] ("" = no revision).
DOWNLOAD = """
import json, sys
from demo.bundle import BundleError
from demo.hub import download_bundle
results = []
for repo_id, revision in zip(sys.argv[1::2], sys.argv[2::2]):
    try:
        results.append({"folder": str(download_bundle(repo_id, revision or None))})
    except BundleError as error:
        results.append({"error": str(error)})
print(json.dumps(results))
"""
# argv: the default bundle folder; MODEL_REPO and MODEL_REVISION come from the environment.
RESOLVE = """
import json, sys
from pathlib import Path
from demo.loading import resolve_bundle
bundle = resolve_bundle(default_dir=Path(sys.argv[1]))
print(json.dumps({"path": str(bundle.path), "source": bundle.source, "revision": bundle.revision,
                  "notice": bundle.notice, "threshold": bundle.config.threshold}))
"""


@dataclass
class LocalHub:
    endpoint: str
    bundles: dict[str, Path]  # commit sha -> the bundle committed there, oldest first

    @property
    def head(self) -> str:
        return list(self.bundles)[-1]


def commit_bundles(repo: Path, bundles: list[Path]) -> list[str]:
    """A git repo (branch main) with one commit per bundle; returns the commit shas."""
    # No user or system git config: a global git-lfs filter or signing must not change what is committed.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    repo.mkdir(parents=True)
    git("init", "-q", "-b", "main")
    shas = []
    for number, bundle in enumerate(bundles, start=1):
        for path in bundle.iterdir():
            shutil.copy2(path, repo / path.name)
        # Re-hash every file: git's index trusts file stats, and two config.json of the same size
        # written within one second look unchanged to it (this made CI commit a stale config).
        git("read-tree", "--empty")
        git("add", "--all")
        git("commit", "-q", "-m", f"Bundle {number}")
        shas.append(git("rev-parse", "HEAD").strip())
        for path in bundle.iterdir():
            committed = subprocess.run(["git", "show", f"HEAD:{path.name}"], cwd=repo, env=env, check=True,
                                       capture_output=True).stdout
            assert committed == path.read_bytes(), f"commit {number} does not hold {path.name} as written"
    return shas


def wait_until_serving(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"olah exited with code {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    pytest.fail(f"olah did not serve {url} within {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory) -> LocalHub:
    """olah in offline mode on 127.0.0.1, serving REPO_ID with two bundle commits on main."""
    if not OLAH_CLI.exists():
        reason = f"olah is not installed ({OLAH_CLI.relative_to(REPO_ROOT)}; setup.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}, and CI must run the Hub tests")
        pytest.skip(reason)
    from training.model_card import write_model_card

    root = tmp_path_factory.mktemp("olah")
    bundles = []
    for number, (threshold, seed) in enumerate([(0.4, 1), (0.6, 2)], start=1):
        bundle = make_tiny_bundle(root / "bundles" / f"v{number}", threshold=threshold, seed=seed)
        write_model_card(bundle)
        bundles.append(bundle)
    shas = commit_bundles(root / "mirrors" / "models" / REPO_ID, bundles)

    port = free_port()
    config = root / "olah.toml"
    config.write_text(
        f'[basic]\nhost = "127.0.0.1"\nport = {port}\nrepos-path = "{root / "olah-cache"}"\n'
        f'mirrors-path = ["{root / "mirrors"}"]\n\n[accessibility]\noffline = true\n'
    )
    log = root / "olah.out"
    with open(log, "wb") as output:
        process = subprocess.Popen([str(OLAH_CLI), "-c", str(config), "--log-path", str(root / "logs")],
                                   cwd=root, stdout=output, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, f"{endpoint}/api/models/{REPO_ID}/revision/main", log)
        yield LocalHub(endpoint=endpoint, bundles=dict(zip(shas, bundles)))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_app_side(code: str, *args: str, endpoint: str, hf_home: Path, offline: bool = False,
                 **app_env: str) -> tuple[object, str]:
    """Run `code` in a fresh interpreter configured like a Space; return its JSON answer and its stderr."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("HF_", "HUGGING_FACE_", "MODEL_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_ENDPOINT=endpoint, HF_HOME=str(hf_home),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TF_CPP_MIN_LOG_LEVEL="2", **app_env)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def download(endpoint: str, hf_home: Path, *revisions: str, offline: bool = False) -> tuple[list[dict], str]:
    """download_bundle(REPO_ID, revision) for each revision, in one app-side process."""
    pairs = [part for revision in revisions for part in (REPO_ID, revision)]
    return run_app_side(DOWNLOAD, *pairs, endpoint=endpoint, hf_home=hf_home, offline=offline)


def folder_of(answer: dict) -> Path:
    """The folder an app-side download answered with; its error message otherwise."""
    assert "folder" in answer, answer
    return Path(answer["folder"])


def assert_same_bundle(folder: str | Path, expected: Path) -> None:
    folder = Path(folder)
    assert sha256_of(folder / MODEL_FILE) == sha256_of(expected / MODEL_FILE)
    assert (folder / CONFIG_FILE).read_bytes() == (expected / CONFIG_FILE).read_bytes()


def test_the_two_test_bundles_differ(local_hub):
    """Otherwise the byte-for-byte checks below could not tell one commit from the other."""
    first, second = local_hub.bundles.values()
    assert sha256_of(first / MODEL_FILE) != sha256_of(second / MODEL_FILE)
    assert (first / CONFIG_FILE).read_bytes() != (second / CONFIG_FILE).read_bytes()


def test_download_by_branch_and_by_each_commit_gives_that_bundle(local_hub, tmp_path):
    shas = list(local_hub.bundles)
    answers, _ = download(local_hub.endpoint, tmp_path / "hf", "", "main", *shas)

    no_revision, main, *by_sha = answers
    for answer in (no_revision, main):
        assert folder_of(answer).name == local_hub.head  # snapshot folders are named by commit
        assert_same_bundle(folder_of(answer), local_hub.bundles[local_hub.head])
    for sha, answer in zip(shas, by_sha):
        assert folder_of(answer).name == sha
        assert_same_bundle(folder_of(answer), local_hub.bundles[sha])


def test_offline_mode_serves_the_cache_and_names_what_is_missing(local_hub, tmp_path):
    hf_home = tmp_path / "hf"
    first, second = local_hub.bundles
    download(local_hub.endpoint, hf_home, "main", first)

    # Offline, and the endpoint dead too: nothing may be fetched, everything comes from the cache.
    answers, _ = download(DEAD_ENDPOINT, hf_home, "main", first, second, "other-branch", offline=True)

    main, pinned, head, never_downloaded = answers
    assert_same_bundle(folder_of(main), local_hub.bundles[second])
    assert_same_bundle(folder_of(pinned), local_hub.bundles[first])
    assert folder_of(head) == folder_of(main)  # main's commit, known from the cached ref
    assert never_downloaded == {"error": f"{REPO_ID}@other-branch is not in the local cache, "
                                         "and HF_HUB_OFFLINE is set, so nothing is downloaded."}


def test_an_unreachable_hub_falls_back_to_the_cache(local_hub, tmp_path):
    hf_home = tmp_path / "hf"
    download(local_hub.endpoint, hf_home, "main")

    answers, _ = download(DEAD_ENDPOINT, hf_home, "main", "other-branch")

    cached, uncached = answers
    assert_same_bundle(folder_of(cached), local_hub.bundles[local_hub.head])
    assert uncached == {"error": f"{REPO_ID}@other-branch is not in the local cache, "
                                 f"and the Hub at {DEAD_ENDPOINT} could not be reached."}


def test_a_missing_repo_or_revision_gives_a_clear_message(local_hub, tmp_path):
    missing_sha = "0" * 40
    answers, _ = run_app_side(DOWNLOAD, REPO_ID, "no-such-branch", REPO_ID, missing_sha,
                              "carseg/no-such-model", "main", "not a repo id", "main",
                              endpoint=local_hub.endpoint, hf_home=tmp_path / "hf")

    no_branch, no_commit, no_repo, bad_id = answers
    assert no_branch["error"].startswith(f"The Hub has no repo {REPO_ID} at revision 'no-such-branch'")
    assert no_commit["error"].startswith(f"{REPO_ID}@{missing_sha} is not in the local cache, "
                                         f"and the Hub at {local_hub.endpoint} answered HTTP 404")
    assert no_repo["error"].startswith("The Hub has no repo carseg/no-such-model at revision 'main'")
    assert bad_id["error"].startswith("'not a repo id' is not a valid Hub repo id")


def corrupt(path: Path) -> None:
    """Flip one byte of a cached file (the snapshot entry links to the blob, which is what changes)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.resolve().write_bytes(bytes(data))


def test_a_corrupted_cached_model_is_downloaded_again_never_served(local_hub, tmp_path):
    hf_home = tmp_path / "hf"
    expected = local_hub.bundles[local_hub.head]
    (first,), _ = download(local_hub.endpoint, hf_home, "main")
    cached_model = folder_of(first) / MODEL_FILE
    corrupt(cached_model)
    assert sha256_of(cached_model) != sha256_of(expected / MODEL_FILE)

    (again,), stderr = download(local_hub.endpoint, hf_home, "main")
    assert "failed verification" in stderr and "downloading it again" in stderr
    assert_same_bundle(folder_of(again), expected)

    # Offline, a corrupted cache cannot be repaired: a clear error, not a different model.
    # Nor can an unreachable Hub: by branch or by commit sha (which huggingface_hub treats differently).
    corrupt(cached_model)
    offline, _ = download(DEAD_ENDPOINT, hf_home, "main", local_hub.head, offline=True)
    unreachable, _ = download(DEAD_ENDPOINT, hf_home, "main", local_hub.head)
    for answer in offline + unreachable:
        assert "folder" not in answer
        assert "does not match its config.json" in answer["error"] and "corrupted or was replaced" in answer["error"]
    for answer in offline:
        assert answer["error"].endswith("HF_HUB_OFFLINE is set, so it cannot be downloaded again.")


def test_the_app_serves_the_pinned_commit(local_hub, tmp_path, tiny_bundle_dir):
    first = list(local_hub.bundles)[0]
    answer, _ = run_app_side(RESOLVE, str(tiny_bundle_dir), endpoint=local_hub.endpoint, hf_home=tmp_path / "hf",
                             MODEL_REPO=REPO_ID, MODEL_REVISION=first)

    assert answer["revision"] == first
    assert answer["source"] == f"Hub repo {REPO_ID} @ {first}"
    assert answer["notice"] == ""
    assert answer["threshold"] == 0.4  # the first bundle's, not the default's (0.5) nor the head's (0.6)
    assert_same_bundle(answer["path"], local_hub.bundles[first])


def test_the_app_falls_back_to_the_default_with_a_notice_when_the_hub_is_unreachable(local_hub, tmp_path,
                                                                                     tiny_bundle_dir):
    answer, stderr = run_app_side(RESOLVE, str(tiny_bundle_dir), endpoint=DEAD_ENDPOINT, hf_home=tmp_path / "hf",
                                  MODEL_REPO=REPO_ID, MODEL_REVISION="main")

    assert Path(answer["path"]) == tiny_bundle_dir
    assert answer["source"] == "default model shipped with the app"
    assert answer["notice"].startswith("The configured model could not be loaded, so the default model is served.")
    assert f"{REPO_ID}@main is not in the local cache, and the Hub at {DEAD_ENDPOINT} could not be reached" in (
        answer["notice"])
    assert "Serving the default model instead" in stderr


@pytest.mark.live_hub
def test_live_push_to_a_private_repo_and_download_it_back(tiny_bundle_dir, tmp_path):
    reason = hub_unavailable_reason()
    if reason:
        pytest.skip(f"live Hub round trip: {reason}")
    from huggingface_hub import HfApi

    from demo.hub import download_bundle
    from training.push import push_bundle

    bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))
    api = HfApi(token=os.environ["HF_TOKEN"])
    repo_id = f"{api.whoami()['name']}/carseg-roundtrip-test-{uuid.uuid4().hex[:8]}"
    try:
        commit = push_bundle(bundle, repo_id, api=api, private=True, message="Round-trip test")
        assert api.repo_info(repo_id).private
        folder = download_bundle(repo_id, commit.oid, cache_dir=str(tmp_path / "cache"))
        assert folder.name == commit.oid
        assert_same_bundle(folder, bundle)
        assert (folder / "README.md").read_bytes() == (bundle / "README.md").read_bytes()
    finally:
        api.delete_repo(repo_id, missing_ok=True)


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Point the already imported huggingface_hub at `endpoint`, online, with an empty cache.

    It reads HF_ENDPOINT and the like when first imported (test_hub.py starts fresh processes for
    that); here the app side runs in this process, so the constants it read are set instead.
    """
    from huggingface_hub import constants

    def point(endpoint: str) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    return point


def test_an_unreachable_hub_shows_the_fallback_notice_on_the_running_page(hub_at, launch_app, tiny_bundle_dir):
    dead_endpoint = f"http://127.0.0.1:{free_port()}"
    hub_at(dead_endpoint)
    bundle = resolve_bundle({"MODEL_REPO": "carseg/tiny-unet", "MODEL_REVISION": "main"}, default_dir=tiny_bundle_dir)

    url = launch_app(build_demo(bundle))

    config = httpx.get(f"{url}config", timeout=30).json()
    notices = [component["props"]["value"] for component in config["components"]
               if component["props"].get("elem_id") == "model-notice"]
    assert len(notices) == 1
    assert "could not be loaded, so the default model is served" in notices[0]
    assert f"the Hub at {dead_endpoint} could not be reached" in notices[0]
    assert any("default model shipped with the app" in str(component["props"].get("value"))
               for component in config["components"]), "the model line names what is served instead"


@pytest.mark.parametrize("status", [401, 403, 500])
def test_the_hub_token_never_reaches_the_page_notice_or_the_logs(hub_at, tiny_bundle_dir, monkeypatch, caplog,
                                                                 capfd, status):
    secret = "hf_appSideSECRETtoken0123456789abcd"
    monkeypatch.setenv("HF_TOKEN", secret)
    handler = type("Hub", (EchoingHub,), {"status": status, "authorizations": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="huggingface_hub")  # its own handler writes to stderr
    try:
        hub_at(f"http://127.0.0.1:{server.server_address[1]}")
        bundle = resolve_bundle({"MODEL_REPO": "carseg/private-model"}, default_dir=tiny_bundle_dir)
    finally:
        server.shutdown()
        server.server_close()

    assert f"Bearer {secret}" in handler.authorizations, "the token was sent, so the server could echo it"
    assert bundle.notice.startswith("The configured model could not be loaded")
    assert secret not in bundle.notice
    out, err = capfd.readouterr()
    assert secret not in caplog.text and secret not in out + err
    assert "Serving the default model instead" in caplog.text


class EchoingHub(BaseHTTPRequestHandler):
    """The worst hub: it refuses every request with `status` and echoes the credentials it was sent."""

    status = 401
    authorizations: list[str] = []

    def do_GET(self):
        credentials = self.headers.get("Authorization", "")
        self.authorizations.append(credentials)
        body = json.dumps({"error": f"Invalid credentials: {credentials}"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        # The one 401 huggingface_hub does not turn into "repository not found": its message is kept.
        self.send_header("X-Error-Message", "Invalid credentials in Authorization header")
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass
