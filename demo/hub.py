"""Bundles on the Hugging Face Hub: downloaded at a pinned revision into huggingface_hub's own cache.

huggingface_hub is imported when first needed, not with this module: it reads HF_ENDPOINT and
HF_HUB_OFFLINE once, at its import, and callers (the app, the tests) may set them before.
"""
from __future__ import annotations

import logging
from pathlib import Path

from demo.bundle import CARD_FILE, CONFIG_FILE, MODEL_FILE, BundleError
from demo.bundle_files import verify_bundle

logger = logging.getLogger(__name__)

# Only what serving needs is downloaded from the Hub.
HUB_PATTERNS = [MODEL_FILE, CONFIG_FILE, CARD_FILE, "*.png", "*.json", "*.tflite", "*.onnx"]


def download_bundle(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Fetch a bundle from the Hub at `revision` into huggingface_hub's cache; return its folder.

    Honours HF_ENDPOINT and HF_HUB_OFFLINE (offline: served from the cache alone), both read
    when huggingface_hub is first imported. A cached model.keras whose hash does not match is
    downloaded again once; if it still does not match, BundleError: never a different model.
    """
    from huggingface_hub import constants, snapshot_download

    where = f"{repo_id}@{revision or 'main'}"
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir, allow_patterns=HUB_PATTERNS))
        try:
            verify_bundle(folder)
        except BundleError as first_error:
            if constants.HF_HUB_OFFLINE:
                raise BundleError(f"{first_error} HF_HUB_OFFLINE is set, so it cannot be downloaded again.") from None
            logger.warning("Cached bundle %s failed verification (%s); downloading it again.", where, first_error)
            try:
                folder = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                                allow_patterns=HUB_PATTERNS, force_download=True))
            except ValueError as error:  # huggingface_hub's way of saying the forced download could not run
                cause = error.__cause__ or error
                raise BundleError(hide_token(f"{first_error} Downloading it again failed: {cause}")) from error
            verify_bundle(folder)
        return folder
    except hub_errors() as error:
        raise BundleError(describe_hub_error(error, repo_id, revision)) from error


def hub_errors() -> tuple[type[Exception], ...]:
    """The exceptions `describe_hub_error` words: what a snapshot_download can raise (OSError last)."""
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    return HFValidationError, LocalEntryNotFoundError, HfHubHTTPError, OSError


def describe_hub_error(error: Exception, repo_id: str, revision: str | None, kind: str = "repo") -> str:
    """One line for a failed snapshot_download of `repo_id` at `revision` (`kind`: "repo", "dataset
    repo"): which repo or revision is missing, or why the Hub could not be asked. Never the token."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = f"{repo_id}@{revision or 'main'}"
    if isinstance(error, HFValidationError):
        return f"'{repo_id}' is not a valid Hub {kind} id (expected owner/name): {error}"
    if isinstance(error, RevisionNotFoundError):
        return f"The Hub {kind} {repo_id} has no revision '{revision}'."
    if isinstance(error, RepositoryNotFoundError):
        # Some hub servers (olah offline, for one) answer an unknown revision this way too.
        return (f"The Hub has no {kind} {repo_id} at revision '{revision or 'main'}' "
                "(check the repo id and revision; a private repo also needs a token).")
    if isinstance(error, LocalEntryNotFoundError):
        cause = error.__cause__
        if isinstance(cause, OfflineModeIsEnabled):
            reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
        elif isinstance(cause, HfHubHTTPError):
            reason = (f"the Hub at {constants.ENDPOINT} answered HTTP {cause.response.status_code} "
                      "(check the repo id and revision)")
        else:
            reason = f"the Hub at {constants.ENDPOINT} could not be reached"
        return f"{where} is not in the local cache, and {reason}."
    if isinstance(error, HfHubHTTPError):  # its message quotes the server's: never pass a token on
        return hide_token(f"The Hub refused the download of {where}: {error}")
    return hide_token(f"Could not download {where}: {error}")


def hide_token(text: str, token: str | None = None) -> str:
    """`text` with the Hub token (default: the user's own) masked, should a server ever echo it back
    in an error. Such a message is logged, and shown on the page as the fallback notice, to anyone."""
    if token is None:
        from huggingface_hub import get_token

        token = get_token()
    return text.replace(token, "hf_***") if token else text
