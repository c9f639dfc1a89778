"""`python -m training.deploy_space`, tested at the HfApi boundary like training.push (tests/test_push.py).

What it sends: the Space created with the Gradio SDK, its two variables, and one commit holding
exactly `space_files()`. When it refuses (no token, bad ids, a revision that is not a sha, an
incomplete default bundle, a model revision the Hub lacks): one line, status 1, nothing sent.
A live deploy runs only with a token and network (marker live_hub).
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from huggingface_hub import ModelInfo, RepoUrl
from huggingface_hub.errors import RevisionNotFoundError

import training.deploy_space as deploy_module
from demo.bundle import MODEL_FILE
from helpers import (
    COMMIT_SHA,
    DEAD_ENDPOINT,
    REPO_ROOT,
    SECRET,
    RecordingHubApi,
    assert_secret_not_shown,
    hub_unavailable_reason,
    unauthorized,
)
from training.deploy_space import (
    README,
    SPACE_README_BODY,
    deploy_space,
    main,
    space_files,
    split_front_matter,
    stage_space,
)

MODEL_SHA = "89abcdef0123456789abcdef0123456789abcdef"
MODEL_REPO_FILES = [".gitattributes", "README.md", "config.json", "model.keras", "threshold_sweep.png",
                    "training_curves.png"]
SERVED_FILES = ["README.md", "config.json", "model.keras", "threshold_sweep.png", "training_curves.png"]


class RecordingSpaceApi(RecordingHubApi):
    """RecordingHubApi that also answers what a deploy asks: the model's files, the Space, its variables."""

    def __init__(self, fail_with: Exception | None = None, model_private: bool = False,
                 model_files: list[str] = MODEL_REPO_FILES):
        super().__init__(fail_with=fail_with)
        self.model_private = model_private
        self.model_files = model_files
        self.uploaded: dict[str, bytes] = {}

    def model_info(self, repo_id, **kwargs):
        self._record("model_info", repo_id=repo_id, **kwargs)
        return ModelInfo(id=repo_id, sha=kwargs.get("revision"), private=self.model_private,
                         siblings=[{"rfilename": name} for name in self.model_files])

    def create_repo(self, repo_id, **kwargs):
        super().create_repo(repo_id, **kwargs)
        return RepoUrl(f"https://huggingface.co/spaces/{repo_id}")

    def add_space_variable(self, repo_id, key, value, **kwargs):
        self._record("add_space_variable", repo_id=repo_id, key=key, value=value, **kwargs)

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])  # a temporary folder, gone after the call: keep its contents
        self.uploaded = {path.relative_to(folder).as_posix(): path.read_bytes()
                         for path in sorted(folder.rglob("*")) if path.is_file()}
        return super().upload_folder(**kwargs)


def deploy_args(space_id="someone/car-space", model_repo="someone/car-unet", revision=MODEL_SHA, *extra):
    return [space_id, "--model-repo", model_repo, "--revision", revision, *extra]


def test_deploy_creates_the_space_sets_its_variables_and_uploads_exactly_its_files_in_one_commit(
        token_in_env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    api = RecordingSpaceApi()

    assert main(deploy_args(), api=api) == 0

    assert api.call_names == ["model_info", "create_repo", "add_space_variable", "add_space_variable",
                              "upload_folder"]
    model_info, create_repo, repo_variable, revision_variable, upload = (arguments for _, arguments in api.calls)
    assert model_info == {"repo_id": "someone/car-unet", "revision": MODEL_SHA}
    assert create_repo == {"repo_id": "someone/car-space", "repo_type": "space", "space_sdk": "gradio",
                           "private": None, "exist_ok": True}
    assert (repo_variable["repo_id"], repo_variable["key"], repo_variable["value"]) == (
        "someone/car-space", "MODEL_REPO", "someone/car-unet")
    assert (revision_variable["key"], revision_variable["value"]) == ("MODEL_REVISION", MODEL_SHA)
    assert upload["repo_id"] == "someone/car-space" and upload["repo_type"] == "space"
    assert upload["delete_patterns"] == ["*"]  # the commit replaces whatever the Space held
    assert upload["commit_message"] == f"Deploy the car segmentation app serving someone/car-unet@{MODEL_SHA[:12]}"

    # Exactly the one list of the Space's files; the repo's own copies, byte for byte, but the README.
    assert sorted(api.uploaded) == space_files()
    assert {"app.py", "requirements.txt", "README.md", ".gitattributes", f"demo/default_model/{MODEL_FILE}",
            "demo/ui.py"} <= set(api.uploaded)
    assert not any(name.split("/")[0] in ("training", "tests", "bench", "runs", "scripts", "docs")
                   or "__pycache__" in name or name.endswith(".pyc") for name in api.uploaded)
    assert "BENCHMARKS.md" not in api.uploaded and not any("model_history" in name.lower() for name in api.uploaded)
    for name, content in api.uploaded.items():
        if name != "README.md":
            assert content == (REPO_ROOT / name).read_bytes(), name
    config, body = split_front_matter(api.uploaded["README.md"].decode())
    assert config["python_version"] == "3.11" and config["sdk"] == "gradio"
    assert config["models"] == ["someone/car-unet"]
    assert config["preload_from_hub"] == [f"someone/car-unet {','.join(SERVED_FILES)} {MODEL_SHA}"]
    assert body == "\n" + (REPO_ROOT / SPACE_README_BODY).read_text(encoding="utf-8")  # for visitors, not the repo's

    out, err = assert_secret_not_shown(capsys, caplog)
    print(out)  # the command's own report, for the record (pytest -s)
    assert f"to someone/car-space: commit {COMMIT_SHA}" in out
    assert f"https://huggingface.co/someone/car-space/commit/{COMMIT_SHA}" in out
    assert f"MODEL_REPO=someone/car-unet MODEL_REVISION={MODEL_SHA}" in out
    assert "the Space: https://huggingface.co/spaces/someone/car-space" in out
    assert err == ""


def test_a_private_model_is_not_preloaded_and_the_user_is_told_to_add_a_token_secret(token_in_env, capsys):
    api = RecordingSpaceApi(model_private=True)
    assert main(deploy_args("someone/car-space", "someone/car-unet", MODEL_SHA, "--private"), api=api) == 0
    assert api.calls[1][1]["private"] is True
    config, _ = split_front_matter(api.uploaded["README.md"].decode())
    assert config["models"] == ["someone/car-unet"] and "preload_from_hub" not in config
    out, _ = capsys.readouterr()
    assert "add a read token as the Space secret HF_TOKEN" in out
    assert SECRET not in out


@pytest.mark.parametrize("argv, expected", [
    (deploy_args("no-owner"), "error: bad repo id"),
    (deploy_args("too/many/parts"), "error: bad repo id"),
    (deploy_args("someone/car-space", "has space/x"), "error: bad repo id"),
    (deploy_args("someone/car-space", "someone/car-unet", "main"), "must be the model repo's full commit sha"),
    (deploy_args("someone/car-space", "someone/car-unet", MODEL_SHA[:12]), "must be the model repo's full commit sha"),
])
def test_bad_ids_and_revisions_are_refused_before_any_hub_call(argv, expected, token_in_env, capsys):
    api = RecordingSpaceApi()
    assert main(argv, api=api) == 1
    assert api.calls == []
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def repo_copy(tmp_path, monkeypatch) -> Path:
    """The Space's files copied to a scratch root that deploy reads instead of the repository."""
    root = tmp_path / "repo"
    stage_space(root)
    shutil.copyfile(REPO_ROOT / "README.md", root / "README.md")
    (root / SPACE_README_BODY).parent.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / SPACE_README_BODY, root / SPACE_README_BODY)
    monkeypatch.setattr(deploy_module, "REPO_ROOT", root)
    return root


def _corrupt_default_model(root: Path) -> None:
    path = root / "demo" / "default_model" / MODEL_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _remove_default_config(root: Path) -> None:
    (root / "demo" / "default_model" / "config.json").unlink()


def _remove_app(root: Path) -> None:
    (root / "app.py").unlink()


def _remove_space_readme_body(root: Path) -> None:
    (root / SPACE_README_BODY).unlink()


def _unpin_python(root: Path) -> None:
    readme = root / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").replace('python_version: "3.11"\n', ""), encoding="utf-8")


@pytest.mark.parametrize("damage, expected", [
    (_corrupt_default_model, "does not match its config.json"),
    (_remove_default_config, "config.json is missing"),
    (_remove_app, "app.py missing from"),
    (_remove_space_readme_body, f"{SPACE_README_BODY} missing from"),
    (_unpin_python, "the Space would not build: python_version must be a quoted"),
])
def test_an_incomplete_space_is_refused_before_any_hub_call(repo_copy, damage, expected, token_in_env, capsys):
    damage(repo_copy)
    api = RecordingSpaceApi()
    assert main(deploy_args(), api=api) == 1
    assert api.calls == []
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and expected in err and err.count("\n") == 1


def test_the_fixture_really_redirects_deploy_to_the_copy(repo_copy, token_in_env):
    """Without damage the copy deploys: the refusals above come from the damage, not the redirection."""
    (repo_copy / "demo" / "marker.txt").write_text("only in the copy")
    api = RecordingSpaceApi()
    assert main(deploy_args(), api=api) == 0
    assert "demo/marker.txt" in api.uploaded


def test_a_model_revision_the_hub_lacks_stops_the_deploy_before_anything_is_written(token_in_env, capsys):
    class MissingRevision(RecordingSpaceApi):
        def model_info(self, repo_id, **kwargs):
            self._record("model_info", repo_id=repo_id, **kwargs)
            import httpx2
            request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}/revision/x")
            raise RevisionNotFoundError("404 revision not found", response=httpx2.Response(404, request=request))

    api = MissingRevision()
    assert main(deploy_args(), api=api) == 1
    assert api.call_names == ["model_info"]
    _, err = capsys.readouterr()
    assert err.startswith(f"error: the Hub has no model repo someone/car-unet at revision {MODEL_SHA}")


def test_a_repo_that_is_not_a_bundle_is_refused(token_in_env, capsys):
    api = RecordingSpaceApi(model_files=[".gitattributes", "README.md"])
    assert main(deploy_args(), api=api) == 1
    assert api.call_names == ["model_info"]
    _, err = capsys.readouterr()
    assert "is not a model bundle" in err and err.count("\n") == 1


def test_a_rejected_token_gives_one_clear_line_and_never_shows_the_token(token_in_env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    api = RecordingSpaceApi(fail_with=unauthorized(f"401 Client Error: Unauthorized. Invalid token {SECRET}"))
    assert main(deploy_args(), api=api) == 1
    assert api.call_names == ["model_info"]
    _, err = assert_secret_not_shown(capsys, caplog)
    assert err.startswith("error: the Hub rejected the token (HTTP 401)") and err.count("\n") == 1


def run_deploy_command(hf_home: Path) -> subprocess.CompletedProcess:
    """The real command line, with no token in the environment and HF_HOME (saved login) at `hf_home`."""
    clean = {key: value for key, value in os.environ.items()
             if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE")}
    clean.update(HF_HOME=str(hf_home), HF_ENDPOINT=DEAD_ENDPOINT, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-m", "training.deploy_space", *deploy_args()],
                          cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_no_token_is_a_clear_error(tmp_path):
    result = run_deploy_command(tmp_path / "empty-hf-home")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no Hugging Face token: set HF_TOKEN")
    assert "Traceback" not in result.stderr


def test_the_saved_login_is_used_and_never_printed(tmp_path):
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    (hf_home / "token").write_text(SECRET)
    result = run_deploy_command(hf_home)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: could not reach the Hub at {DEAD_ENDPOINT}: ")
    assert SECRET not in result.stdout + result.stderr


@pytest.mark.live_hub
def test_live_deploy_to_a_private_space(tiny_bundle_dir, tmp_path):
    """Push the tiny bundle to a new private model repo, deploy a private Space serving it, read both back."""
    reason = hub_unavailable_reason()
    if reason:
        pytest.skip(f"live Space deploy: {reason}")
    from huggingface_hub import HfApi

    from training.push import push_bundle

    api = HfApi(token=os.environ["HF_TOKEN"])
    owner, suffix = api.whoami()["name"], uuid.uuid4().hex[:8]
    model_repo, space_id = f"{owner}/carseg-deploy-test-{suffix}", f"{owner}/carseg-space-test-{suffix}"
    try:
        bundle = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))
        model_commit = push_bundle(bundle, model_repo, api=api, private=True, message="Deploy test model")
        commit, url, files, preloaded = deploy_space(space_id, model_repo, model_commit.oid, api=api, private=True)
        assert url.endswith(f"/spaces/{space_id}") and not preloaded
        assert sorted(api.list_repo_files(space_id, repo_type="space", revision=commit.oid)) == files
        variables = api.get_space_variables(space_id)
        assert variables["MODEL_REPO"].value == model_repo
        assert variables["MODEL_REVISION"].value == model_commit.oid
    finally:
        api.delete_repo(space_id, repo_type="space", missing_ok=True)
        api.delete_repo(model_repo, missing_ok=True)


def test_bytecode_and_hidden_leftovers_are_not_part_of_the_space(repo_copy):
    """A half-copied default model (ship_default_model.sh stages it as demo/.default_model.tmp-*) never ships."""
    (repo_copy / "demo" / ".default_model.tmp-Ab12").mkdir()
    (repo_copy / "demo" / ".default_model.tmp-Ab12" / MODEL_FILE).write_bytes(b"half a model")
    (repo_copy / "demo" / "__pycache__").mkdir(exist_ok=True)
    (repo_copy / "demo" / "__pycache__" / "ui.cpython-311.pyc").write_bytes(b"bytecode")
    (repo_copy / "demo" / "stray.pyc").write_bytes(b"bytecode")
    files = space_files()
    assert not any(".default_model.tmp" in name or name.endswith(".pyc") for name in files), files
    assert "demo/ui.py" in files and f"demo/default_model/{MODEL_FILE}" in files


# Markdown links and pictures, [text](target) and ![text](target): the target up to a space or ")".
MARKDOWN_LINK = re.compile(r"\]\(\s*<?([^)\s>]+)")


def dead_links(text: str, folder: str, paths: set[str]) -> list[str]:
    """The relative link targets in `text` (a file in `folder`) that name none of `paths` (POSIX, relative to
    one root), neither a file nor a folder holding one; addresses with a scheme and bare anchors are not checked."""
    folders = {posixpath.dirname(path) for path in paths}
    folders |= {parent for path in folders for parent in _parents(path)}
    dead = []
    for target in MARKDOWN_LINK.findall(text):
        if re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        path = posixpath.normpath(posixpath.join(folder, target.split("#", 1)[0]))
        if path not in paths and path not in folders:
            dead.append(target)
    return dead


def _parents(path: str) -> set[str]:
    parents = set()
    while path:
        path = posixpath.dirname(path)
        parents.add(path)
    return parents


def repository_files() -> set[str]:
    """The repository's files (tracked and untracked but not ignored) as git lists them."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout
    return {name for name in listing.splitlines() if (REPO_ROOT / name).exists()}


def test_the_link_check_finds_dead_links_and_passes_good_ones():
    """The two tests below would pass on anything if this check could not fail."""
    paths = {"README.md", "docs/training.md", "docs/images/app.png", "demo/ui.py"}
    text = ("[ok](docs/training.md) ![ok](docs/images/app.png) [ok](demo) [ok](docs/training.md#data) "
            "[web](https://huggingface.co/x) [anchor](#top) [dead](BENCHMARKS.md) [dead](docs/bundle.md) "
            "[dead](demo/missing.py) [dead](../outside.md)")
    assert dead_links(text, "", paths) == ["BENCHMARKS.md", "docs/bundle.md", "demo/missing.py", "../outside.md"]
    # From a file in docs/, links are relative to docs/.
    assert dead_links("[ok](training.md) [ok](../demo/ui.py) [dead](docs/training.md)", "docs", paths) == [
        "docs/training.md"]


def test_every_relative_link_in_the_spaces_readme_resolves_in_the_space(tmp_path):
    """The README the deploy uploads links only files the Space has (not docs/, not BENCHMARKS.md)."""
    staged = tmp_path / "space"
    files = set(stage_space(staged, "someone/car-unet", MODEL_SHA, SERVED_FILES))
    text = (staged / README).read_text(encoding="utf-8")
    assert dead_links(text, "", files) == []


def test_every_relative_link_in_the_repository_docs_resolves_in_the_repository():
    files = repository_files()
    documents = ["README.md", *sorted(name for name in files if name.startswith("docs/") and name.endswith(".md"))]
    links = {name: MARKDOWN_LINK.findall((REPO_ROOT / name).read_text(encoding="utf-8")) for name in documents}
    assert links["README.md"], "the README links nothing: this test would check nothing"
    dead = {name: dead_links((REPO_ROOT / name).read_text(encoding="utf-8"), posixpath.dirname(name), files)
            for name in documents}
    assert {name: targets for name, targets in dead.items() if targets} == {}
