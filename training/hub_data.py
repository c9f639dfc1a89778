"""Training data from a Hub dataset repository: `--data-dir hf://datasets/OWNER/NAME[@REVISION]`.

The repository holds the plain layout (images/, masks/, optionally val/images and val/masks). It
is downloaded once, before anything else reads it, into huggingface_hub's own cache at REVISION
(default main), and the commit that revision resolved to is recorded in the bundle, so the model
says exactly which data trained it. Everything after reads the local snapshot folder.

huggingface_hub is imported when first needed: it reads HF_ENDPOINT and HF_HUB_OFFLINE at its import.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from training.data import DataError

PREFIX = "hf://datasets/"
EXPECTED_FORM = "hf://datasets/OWNER/NAME or hf://datasets/OWNER/NAME@REVISION"
_PATH = re.compile(r"hf://datasets/(?P<repo>[^/@\s]+/[^/@\s]+)(?:@(?P<revision>[^@\s]+))?/?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class HubDataset:
    repo_id: str  # OWNER/NAME
    revision: str | None  # as asked (a branch, tag or commit); None: main
    commit: str  # the commit sha the revision resolved to
    folder: Path  # the snapshot in huggingface_hub's cache

    @property
    def name(self) -> str:
        return f"hf://datasets/{self.repo_id}"

    def record(self) -> dict:
        """What the bundle's dataset record adds: where the data came from, exactly."""
        return {"hub_dataset": self.repo_id, "revision": self.revision or "main", "commit": self.commit}


def is_hub_path(text: str | Path) -> bool:
    """Whether a --data-dir value names a Hub repository (hf://...) rather than a local folder."""
    return str(text).startswith("hf:")


def parse_hub_path(text: str) -> tuple[str, str | None]:
    """(OWNER/NAME, REVISION or None) of an hf://datasets/ path; DataError naming the expected form."""
    match = _PATH.fullmatch(str(text))
    if not match:
        raise DataError(f"'{text}' is not a Hub dataset path: expected {EXPECTED_FORM} "
                        f"(a dataset repository holding images/ and masks/).", "layout")
    return match["repo"], match["revision"]


def download_dataset(text: str, cache_dir: str | None = None) -> HubDataset:
    """The dataset repository `text` names, downloaded at its revision into huggingface_hub's cache.

    Honours HF_ENDPOINT, HF_HOME and HF_HUB_OFFLINE (offline: served from the cache alone). Every
    failure is a DataError with one line: a malformed path, no such repository or revision, the Hub
    out of reach, a repository that is not images/ and masks/.
    """
    from huggingface_hub import snapshot_download

    from demo.hub import describe_hub_error, hub_errors
    from training.data import is_plain_layout

    repo_id, revision = parse_hub_path(text)
    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir))
    except hub_errors() as error:
        raise DataError(describe_hub_error(error, repo_id, revision, kind="dataset repo"), "hub") from error
    commit = folder.name  # the cache keeps each snapshot under its commit sha
    if not _COMMIT.fullmatch(commit):
        raise DataError(f"{text} was downloaded to {folder}, which names no commit: its revision cannot be "
                        f"recorded.", "hub")
    if not is_plain_layout(folder):
        raise DataError(f"{text} (commit {commit[:12]}) holds no images/ and masks/ folders: a Hub dataset "
                        f"for training holds the plain layout (docs/training.md, \"Your own images and masks\").",
                        "layout")
    return HubDataset(repo_id=repo_id, revision=revision, commit=commit, folder=folder)
