"""`python -m training.push`, tested at the HfApi boundary: what it would send, and when it refuses.

The real upload is covered by the live round trip in test_hub.py (needs a token and network).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from demo.bundle import CARD_FILE, CONFIG_FILE, MODEL_FILE, BundleError
from helpers import (
    COMMIT_SHA,
    DEAD_ENDPOINT,
    REPO_ROOT,
    SECRET,
    RecordingHubApi,
    assert_secret_not_shown,
    unauthorized,
)
from training.model_card import write_model_card
from training.push import main, push_bundle


@pytest.fixture
def bundle(tiny_bundle_dir, tmp_path) -> Path:
    """A private copy of the tiny bundle (push may add its model card), without a card."""
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))


def test_push_creates_repo_and_branch_then_uploads_the_bundle_in_one_commit(bundle, token_in_env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    api = RecordingHubApi()
    code = main([str(bundle), "--repo-id", "someone/car-unet", "--private", "--branch", "experiment",
                 "--message", "Try a wider U-Net"], api=api)

    assert code == 0
    assert api.call_names == ["create_repo", "create_branch", "upload_folder"]
    create_repo, create_branch, upload = (arguments for _, arguments in api.calls)
    assert create_repo == {"repo_id": "someone/car-unet", "repo_type": "model", "private": True, "exist_ok": True}
    assert create_branch == {"repo_id": "someone/car-unet", "branch": "experiment", "repo_type": "model",
                             "exist_ok": True}
    assert upload["repo_id"] == "someone/car-unet" and upload["repo_type"] == "model"
    assert Path(upload["folder_path"]) == bundle
    assert upload["revision"] == "experiment"
    assert upload["commit_message"] == "Try a wider U-Net"
    # The card was missing, so it was generated before the upload and went into the same commit.
    assert api.uploaded_files == [CARD_FILE, CONFIG_FILE, "graph_any_shape.onnx", "graph_any_shape.tflite", MODEL_FILE]
    assert ModelCard.load(bundle / CARD_FILE).data.library_name == "keras"

    out, err = assert_secret_not_shown(capsys, caplog)
    assert COMMIT_SHA in out
    assert f"https://huggingface.co/someone/car-unet/commit/{COMMIT_SHA}" in out
    assert f"MODEL_REPO=someone/car-unet MODEL_REVISION={COMMIT_SHA}" in out
    assert err == ""


def test_push_to_main_keeps_the_namespace_default_visibility_and_an_existing_card(bundle):
    write_model_card(bundle)
    card_before = (bundle / CARD_FILE).read_bytes()
    api = RecordingHubApi()

    commit = push_bundle(bundle, "someone/car-unet", api=api)

    assert commit.oid == COMMIT_SHA
    assert api.call_names == ["create_repo", "upload_folder"]
    assert api.calls[0][1]["private"] is None
    upload = api.calls[1][1]
    assert upload["revision"] is None
    assert upload["commit_message"] == "Upload unet model bundle (val IoU 0.5000)"
    # Stale temporary files never go up; remote files the bundle lacks are replaced.
    assert upload["ignore_patterns"] == [".*"] and upload["delete_patterns"] == ["*"]
    assert (bundle / CARD_FILE).read_bytes() == card_before


def _remove_model(bundle: Path) -> None:
    (bundle / MODEL_FILE).unlink()


def _remove_config(bundle: Path) -> None:
    (bundle / CONFIG_FILE).unlink()


def _corrupt_model(bundle: Path) -> None:
    data = bytearray((bundle / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / MODEL_FILE).write_bytes(bytes(data))


def _remove_folder(bundle: Path) -> None:
    shutil.rmtree(bundle)


def _truncate_graph(bundle: Path, name: str = "graph_any_shape.tflite") -> None:
    graph = bundle / name
    graph.write_bytes(graph.read_bytes()[:1000])


def _truncate_onnx_graph(bundle: Path) -> None:
    _truncate_graph(bundle, "graph_any_shape.onnx")


@pytest.mark.parametrize("damage, expected", [
    (_remove_folder, "is not a folder"),
    (_remove_model, f"{MODEL_FILE} is missing"),
    (_remove_config, f"{CONFIG_FILE} is missing"),
    (_corrupt_model, "does not match its config.json"),
    (_truncate_graph, "serving graphs are not fit to publish: graph_any_shape.tflite does not match its config.json"),
    (_truncate_onnx_graph, "serving graphs are not fit to publish: graph_any_shape.onnx does not match its config.json"),
])
def test_a_bad_bundle_is_refused_before_any_hub_call(bundle, damage, expected, token_in_env, capsys):
    damage(bundle)
    api = RecordingHubApi()

    with pytest.raises(BundleError, match=expected):
        push_bundle(bundle, "someone/car-unet", api=api)
    assert api.calls == []

    assert main([str(bundle), "--repo-id", "someone/car-unet"], api=api) == 1
    assert api.calls == []
    _, err = capsys.readouterr()
    assert err.startswith("error: ") and expected in err
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("repo_id", ["no-owner", "too/many/parts", "has space/x", "owner/double..dot", ""])
def test_a_bad_repo_id_is_refused_before_any_hub_call(bundle, repo_id, token_in_env, capsys):
    api = RecordingHubApi()
    assert main([str(bundle), "--repo-id", repo_id], api=api) == 1
    assert api.calls == []
    _, err = capsys.readouterr()
    assert err.startswith("error: bad repo id") and err.count("\n") == 1


def test_a_rejected_token_gives_one_clear_line_and_never_shows_the_token(bundle, token_in_env, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    # The worst case: a server that echoes the token back in its error.
    api = RecordingHubApi(fail_with=unauthorized(f"401 Client Error: Unauthorized. Invalid token {SECRET}"))

    assert main([str(bundle), "--repo-id", "someone/car-unet"], api=api) == 1

    assert api.call_names == ["create_repo"]  # nothing is uploaded after the refusal
    _, err = assert_secret_not_shown(capsys, caplog)
    assert err.startswith("error: the Hub rejected the token (HTTP 401)")
    assert err.count("\n") == 1


def test_other_hub_errors_are_scrubbed_of_the_token(bundle, token_in_env, capsys, caplog):
    request = httpx2.Request("POST", "https://huggingface.co/api/models/someone/car-unet/commit/main")
    echoed = HfHubHTTPError(f"500 Server Error for header Bearer {SECRET}",
                            response=httpx2.Response(500, request=request))
    assert main([str(bundle), "--repo-id", "someone/car-unet"], api=RecordingHubApi(fail_with=echoed)) == 1
    _, err = assert_secret_not_shown(capsys, caplog)
    assert "hf_***" in err and err.count("\n") == 1


def run_push_command(bundle: Path, hf_home: Path, **env) -> subprocess.CompletedProcess:
    """The real command line, with no token in the environment and HF_HOME (saved login) at `hf_home`."""
    clean = {key: value for key, value in os.environ.items()
             if key not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE")}
    clean.update(HF_HOME=str(hf_home), HF_ENDPOINT=DEAD_ENDPOINT, PYTHONPATH=str(REPO_ROOT), **env)
    return subprocess.run([sys.executable, "-m", "training.push", str(bundle), "--repo-id", "someone/car-unet"],
                          cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=120)


def test_no_token_is_a_clear_error(bundle, tmp_path):
    result = run_push_command(bundle, tmp_path / "empty-hf-home")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no Hugging Face token: set HF_TOKEN")
    assert "Traceback" not in result.stderr


def test_the_saved_login_is_used_and_never_printed(bundle, tmp_path):
    """`hf auth login` stores the token in HF_HOME/token; push picks it up (here, the Hub is unreachable)."""
    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    (hf_home / "token").write_text(SECRET)
    write_model_card(bundle)  # keeps the command from importing TensorFlow

    result = run_push_command(bundle, hf_home)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: could not reach the Hub at {DEAD_ENDPOINT}: ")
    assert SECRET not in result.stdout + result.stderr
