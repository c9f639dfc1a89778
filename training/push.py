"""Publish a model bundle to the Hugging Face Hub, in one commit.

    python -m training.push BUNDLE --repo-id OWNER/NAME [--private] [--branch B] [--message M]

The bundle is checked before anything is sent: complete, model.keras matching the SHA-256
recorded in config.json, and its serving graphs (if it carries them) matching theirs and converted
from that model.keras. A bundle without a model card gets one generated from its config.json.
The token comes from HF_TOKEN or the saved login (`hf auth login`) and is never printed. The
commit replaces the repo's files with the bundle's, so the Hub holds exactly the bundle; pin
the printed commit sha in the Space (MODEL_REPO, MODEL_REVISION).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import httpx2
from huggingface_hub import CommitInfo, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
from huggingface_hub.utils import validate_repo_id

from demo.bundle import CARD_FILE, BundleConfig, BundleError, GraphError, is_onnx_graph
from demo.bundle_files import verify_bundle
from demo.graphs import onnx_graph_file, verify_graphs
from demo.hub import hide_token
from training.model_card import write_model_card

# Hidden files are leftovers of interrupted atomic writes, never part of a bundle.
IGNORED_FILES = [".*"]
# Remote files the bundle no longer has (an old plot, say) are deleted in the same commit.
REPLACED_FILES = ["*"]


class PushError(RuntimeError):
    """A push that cannot go ahead; the message says what to fix."""


def check_repo_id(repo_id: str, kind: str = "model") -> None:
    """Raise HFValidationError unless `repo_id` is a valid OWNER/NAME (`kind` names the repo in the message)."""
    validate_repo_id(repo_id)
    if repo_id.count("/") != 1:
        raise HFValidationError(f"Repo id must be OWNER/NAME (a user or organisation, then the {kind}): '{repo_id}'.")


def prepare_bundle(bundle_dir: Path, repo_id: str) -> BundleConfig:
    """Check that the bundle is complete and intact; write its model card if it has none."""
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir} is not a folder, so it is not a model bundle.")
    config = verify_bundle(bundle_dir)
    if config.serving_graphs is not None:
        try:
            verify_graphs(bundle_dir, config)
            if any(map(is_onnx_graph, config.serving_graphs.get("files", {}))):
                onnx_graph_file(bundle_dir, config)
        except GraphError as error:
            raise GraphError(f"{bundle_dir}'s serving graphs are not fit to publish: {error} "
                             f"Export them again: python -m training.export_graphs {bundle_dir}") from error
    else:
        print(f"note: {bundle_dir} carries no serving graphs, so the app will convert its model.keras at start "
              f"(seconds); python -m training.export_graphs {bundle_dir} adds them")
    if not (bundle_dir / CARD_FILE).is_file():
        write_model_card(bundle_dir, repo_id)
        print(f"note: {bundle_dir} had no model card; wrote {CARD_FILE} from its config.json")
    return config


def default_commit_message(config: BundleConfig) -> str:
    iou = config.val_iou
    scores = f" (val IoU {iou:.4f})" if isinstance(iou, float) else ""
    return f"Upload {config.architecture} model bundle{scores}"


def push_bundle(bundle_dir: Path, repo_id: str, *, api: HfApi, private: bool = False,
                branch: str | None = None, message: str | None = None) -> CommitInfo:
    """Check the bundle, then create the repo (and branch) if needed and upload it in one commit."""
    bundle_dir = Path(bundle_dir)
    check_repo_id(repo_id)
    config = prepare_bundle(bundle_dir, repo_id)
    # private=None lets the Hub apply the namespace's default visibility; an existing repo keeps its own.
    api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
    if branch:
        api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
    # A bundle is a handful of files, which upload_folder sends as a single commit.
    return api.upload_folder(
        repo_id=repo_id, repo_type="model", folder_path=bundle_dir, revision=branch,
        commit_message=message or default_commit_message(config),
        ignore_patterns=IGNORED_FILES, delete_patterns=REPLACED_FILES,
    )


def scrub(text: str, token: str | None) -> str:
    """The text on one line, with the token (should a server ever echo it) masked; no token, nothing to mask."""
    return hide_token(" ".join(str(text).split()), token or "")


def explain_http_error(error: HfHubHTTPError, repo_id: str, action: str = "push") -> str:
    status = error.response.status_code
    if status == 401:
        return "the Hub rejected the token (HTTP 401): it is invalid or expired; set HF_TOKEN or run `hf auth login`."
    if status == 403:
        return f"the token may not write to {repo_id} (HTTP 403): use a token with write access to that namespace."
    return f"the Hub refused the {action} to {repo_id}: {error}"


def run_hub_command(task: Callable[[HfApi], None], repo_id: str, api: HfApi | None = None,
                    action: str = "push") -> int:
    """Run `task` with a Hub client holding the user's token; the exit status of a command line.

    The token comes from HF_TOKEN or the saved login and is never printed. Every refusal (no
    token, a bad repo id, a bad bundle, an HTTP error, no network) is one line on stderr and
    status 1; a task checks what it can before its first Hub call, so a refusal sends nothing.
    `api` replaces the real client in tests.
    """
    token = None
    try:
        token = get_token()
        if not token:
            raise PushError("no Hugging Face token: set HF_TOKEN, or run `hf auth login` once on this machine.")
        task(api or HfApi(token=token))
    except (BundleError, PushError) as error:
        problem = str(error)
    except HFValidationError as error:
        problem = f"bad repo id: {error}"
    except HfHubHTTPError as error:
        problem = explain_http_error(error, repo_id, action)
    except httpx2.TransportError as error:
        problem = f"could not reach the Hub at {constants.ENDPOINT}: {error}"
    except OSError as error:  # e.g. a bundle folder that is not writable for its model card
        problem = str(error)
    else:
        return 0
    print(f"error: {scrub(problem, token)}", file=sys.stderr)
    return 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.push", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (model.keras, config.json, README.md)")
    parser.add_argument("--repo-id", required=True, help="the Hub model repo, OWNER/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo private (an existing repo keeps its visibility)")
    parser.add_argument("--branch", help="commit to this branch, created from main if missing (default: main)")
    parser.add_argument("--message", help="commit message (default: architecture and val IoU)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, api: HfApi | None = None) -> int:
    """The command line; `api` replaces the real Hub client in tests."""
    args = parse_args(argv)

    def push(client: HfApi) -> None:
        commit = push_bundle(args.bundle, args.repo_id, api=client, private=args.private,
                             branch=args.branch, message=args.message)
        print(f"pushed {args.bundle} to {args.repo_id} (branch {args.branch or 'main'}): commit {commit.oid}")
        print(commit.commit_url)
        print(f"pin it in the Space: MODEL_REPO={args.repo_id} MODEL_REVISION={commit.oid}")

    return run_hub_command(push, args.repo_id, api)


if __name__ == "__main__":
    sys.exit(main())
