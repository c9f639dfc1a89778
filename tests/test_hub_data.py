"""Training data from a Hub dataset repository (`--data-dir hf://datasets/OWNER/NAME@REVISION`), tested
against olah in offline mode on loopback serving local git repos under mirrors-path/datasets/ (as
tests/test_hub.py does for models). The download runs in fresh processes with HF_ENDPOINT set.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import DEAD_ENDPOINT, REPO_ROOT, free_port, plain_folder
from test_hub import OLAH_CLI, run_app_side, wait_until_serving
from training.data import DataError
from training.hub_data import parse_hub_path

ORG = "carseg"
NAME = "tiny-cars"
DATASET = f"hf://datasets/{ORG}/{NAME}"
NOT_PLAIN = f"{ORG}/not-plain"
CHANGED_MASK = "masks/0001TP_006690.png"  # emptied by the second commit, which also adds a README

# argv: hf:// paths; the answer for each: its folder, commit and files, or the DataError's message.
DOWNLOAD = """
import json, sys
from training.data import DataError
from training.hub_data import download_dataset
answers = []
for path in sys.argv[1:]:
    try:
        dataset = download_dataset(path)
        files = sorted(str(p.relative_to(dataset.folder)) for p in dataset.folder.rglob("*") if p.is_file())
        answers.append({"folder": str(dataset.folder), "commit": dataset.commit, "name": dataset.name,
                        "record": dataset.record(), "files": files})
    except DataError as error:
        answers.append({"error": str(error)})
print(json.dumps(answers))
"""


@dataclass
class DataHub:
    endpoint: str
    commits: list[str]  # oldest first
    sources: list[Path]  # the folder each commit holds


def git_env() -> dict:
    return {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com"}


def commit_folders(repo: Path, folders: list[Path]) -> list[str]:
    """A git repo (branch main) whose commits hold each of `folders` in turn; returns the commit shas."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=repo, env=git_env(), check=True, capture_output=True,
                              text=True).stdout

    repo.mkdir(parents=True)
    git("init", "-q", "-b", "main")
    shas = []
    for number, folder in enumerate(folders, start=1):
        for child in repo.iterdir():
            if child.name != ".git":
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(folder, repo, dirs_exist_ok=True)
        git("read-tree", "--empty")
        git("add", "--all")
        git("commit", "-q", "-m", f"Data {number}")
        shas.append(git("rev-parse", "HEAD").strip())
    return shas


@pytest.fixture(scope="module")
def data_hub(tmp_path_factory, camvid_dir) -> DataHub:
    """olah offline on 127.0.0.1 serving datasets ORG/NAME (two commits on main) and NOT_PLAIN (a README)."""
    if not OLAH_CLI.exists():
        reason = f"olah is not installed ({OLAH_CLI.relative_to(REPO_ROOT)}; setup.sh installs it)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}, and CI must run the Hub tests")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("olah-data")
    first = plain_folder(camvid_dir, root / "sources" / "v1")  # six pairs, car as 255
    second = root / "sources" / "v2"
    shutil.copytree(first, second)
    (second / CHANGED_MASK).write_bytes((first / "masks" / "0006R0_f00990.png").read_bytes())
    (second / "README.md").write_text("Six CamVid frames, car masks.\n")
    assert (second / CHANGED_MASK).read_bytes() != (first / CHANGED_MASK).read_bytes()
    mirrors = root / "mirrors" / "datasets"
    commits = commit_folders(mirrors / ORG / NAME, [first, second])
    (root / "sources" / "readme").mkdir()
    (root / "sources" / "readme" / "README.md").write_text("No images here.\n")
    commit_folders(mirrors / NOT_PLAIN, [root / "sources" / "readme"])

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
        wait_until_serving(process, f"{endpoint}/api/datasets/{ORG}/{NAME}/revision/main", log)
        yield DataHub(endpoint=endpoint, commits=commits, sources=[first, second])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def fetch(endpoint: str, hf_home: Path, *paths: str, offline: bool = False) -> list[dict]:
    answers, _ = run_app_side(DOWNLOAD, *paths, endpoint=endpoint, hf_home=hf_home, offline=offline)
    return answers


def test_a_pinned_commit_and_a_branch_each_give_their_files_and_commit(data_hub, tmp_path):
    first, second = data_hub.commits
    answers = fetch(data_hub.endpoint, tmp_path / "hf", f"{DATASET}@{first}", f"{DATASET}@main", DATASET)
    for answer, commit, source in zip(answers, [first, second, second], [*data_hub.sources, data_hub.sources[1]]):
        assert "error" not in answer, answer
        folder = Path(answer["folder"])
        assert answer["commit"] == commit and folder.name == commit
        assert str(tmp_path / "hf") in answer["folder"]  # huggingface_hub's own cache, under HF_HOME
        expected = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
        assert answer["files"] == expected
        for name in expected:
            assert (folder / name).read_bytes() == (source / name).read_bytes(), name
        assert answer["name"] == DATASET
    assert answers[0]["record"] == {"hub_dataset": f"{ORG}/{NAME}", "revision": first, "commit": first}
    assert answers[1]["record"] == {"hub_dataset": f"{ORG}/{NAME}", "revision": "main", "commit": second}
    assert "README.md" not in answers[0]["files"] and "README.md" in answers[1]["files"]


def test_a_cached_revision_is_served_offline_and_an_uncached_one_is_a_clear_error(data_hub, tmp_path):
    hf_home = tmp_path / "hf"
    first, _ = data_hub.commits
    assert "error" not in fetch(data_hub.endpoint, hf_home, f"{DATASET}@{first}")[0]
    cached, uncached = fetch(DEAD_ENDPOINT, hf_home, f"{DATASET}@{first}", f"{DATASET}@main", offline=True)
    assert cached["commit"] == first
    assert uncached == {"error": f"{ORG}/{NAME}@main is not in the local cache, and HF_HUB_OFFLINE is set, "
                                 f"so nothing is downloaded."}
    unreachable, = fetch(DEAD_ENDPOINT, tmp_path / "empty", f"{DATASET}@main")
    assert unreachable == {"error": f"{ORG}/{NAME}@main is not in the local cache, and the Hub at "
                                    f"{DEAD_ENDPOINT} could not be reached."}


def test_no_such_dataset_or_revision_and_a_repo_without_images_are_clear_errors(data_hub, tmp_path):
    missing, bad_revision, not_plain = fetch(data_hub.endpoint, tmp_path / "hf", f"hf://datasets/{ORG}/nothing",
                                             f"{DATASET}@no-such-branch", f"hf://datasets/{NOT_PLAIN}")
    assert missing["error"].startswith(f"The Hub has no dataset repo {ORG}/nothing at revision 'main'") or (
        missing["error"].startswith(f"{ORG}/nothing@main is not in the local cache, and the Hub at")), missing
    assert "no-such-branch" in bad_revision["error"] and "Traceback" not in bad_revision["error"], bad_revision
    assert not_plain["error"].startswith(f"hf://datasets/{NOT_PLAIN} (commit ") and (
        "holds no images/ and masks/ folders" in not_plain["error"]), not_plain


@pytest.mark.parametrize("path", ["hf://datasets/just-a-name", "hf://models/carseg/tiny-cars", "hf://datasets/a/b/c",
                                  "hf:datasets/a/b", "hf://datasets/a/b@"])
def test_a_malformed_hub_path_says_the_expected_form(path):
    with pytest.raises(DataError, match="expected hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION"):
        parse_hub_path(path)


def test_hub_paths_parse_into_repo_and_revision():
    assert parse_hub_path("hf://datasets/me/cars") == ("me/cars", None)
    assert parse_hub_path("hf://datasets/me/cars@v1.0") == ("me/cars", "v1.0")


def test_training_on_a_hub_dataset_records_the_commit_it_read(data_hub, tmp_path):
    _, second = data_hub.commits
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_ENDPOINT=data_hub.endpoint, HF_HOME=str(tmp_path / "hf"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "training.train", "--data-dir", f"{DATASET}@main", "--class-name", "car",
               "--output-dir", str(tmp_path / "out"), "--architecture", "unet", "--base-filters", "4",
               "--input-size", "64x96", "--epochs", "1", "--batch-size", "2", "--limit", "4", "--verbose", "0"]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"data: {DATASET} at commit {second} (main)" in result.stdout
    config = json.loads((tmp_path / "out" / "bundle" / "config.json").read_text())
    assert config["dataset"]["name"] == DATASET
    assert (config["dataset"]["hub_dataset"], config["dataset"]["revision"], config["dataset"]["commit"]) == (
        f"{ORG}/{NAME}", "main", second)
    assert str(tmp_path) not in json.dumps(config)  # no local path (the cache folder) is published
    assert f"{DATASET} at commit {second}" in (tmp_path / "out" / "bundle" / "README.md").read_text()  # the card

    # Resumed on another commit (as when the branch has moved), the run refuses to finish on other files.
    first, _ = data_hub.commits
    resumed = subprocess.run([*command[:4], f"{DATASET}@{first}", *command[5:], "--resume"], cwd=REPO_ROOT, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert f"this run began on {ORG}/{NAME} at commit {second}, but this resume reads commit {first}" in resumed.stderr
    assert f"resume with --data-dir {DATASET}@{second} to finish on the same files" in resumed.stderr


def test_training_on_a_missing_hub_dataset_is_one_line_not_a_traceback(tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE_"))}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_ENDPOINT=DEAD_ENDPOINT, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "training.train", "--data-dir", f"{DATASET}@main", "--class-name", "car",
               "--output-dir", str(tmp_path / "out")]
    result = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip() == (f"error: {ORG}/{NAME}@main is not in the local cache, and HF_HUB_OFFLINE is "
                                     f"set, so nothing is downloaded.")
