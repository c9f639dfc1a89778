"""Model bundles: the one contract between training and serving (see DESIGN.md).

A bundle is a folder with `model.keras`, `config.json` (which carries the SHA-256
of model.keras), a model card and plots. This module finds one (a local folder,
a Hugging Face Hub repo at a pinned revision, or the default shipped with the
app), checks its hash and loads it with Keras' safe mode on.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SCHEMA_VERSION = 1
REQUIRED_CONFIG_KEYS = ("schema_version", "architecture", "input_size", "resize", "stride",
                        "target_class", "threshold", "model_sha256")
# The trained model that ships with the app, served when nothing else is configured.
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "default_model"
# Only what serving needs is downloaded from the Hub.
HUB_PATTERNS = [MODEL_FILE, CONFIG_FILE, CARD_FILE, "*.png", "*.json"]


class BundleError(RuntimeError):
    """A bundle that cannot be served; the message says what failed and where."""


@dataclass
class Bundle:
    path: Path
    config: dict
    model: object
    source: str  # for people: where it came from ("local folder ...", "hub org/name@rev")
    notice: str = ""  # set when this is a fallback the user should know about
    revision: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def val_iou(self) -> float | None:
        return self.config.get("metrics", {}).get("val", {}).get("iou")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(bundle_dir: Path) -> dict:
    """Parse and check config.json; raise BundleError naming what is missing."""
    bundle_dir = Path(bundle_dir)
    config_path = bundle_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(f"{bundle_dir} is not a model bundle: {CONFIG_FILE} is missing.")
    try:
        config = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{config_path} is not valid JSON: {error}") from error
    missing = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if missing:
        raise BundleError(f"{config_path} lacks {', '.join(missing)}.")
    if config["schema_version"] > SCHEMA_VERSION:
        raise BundleError(
            f"{config_path} has schema version {config['schema_version']}; "
            f"this app reads up to {SCHEMA_VERSION}. Update the app."
        )
    return config


def verify_bundle(bundle_dir: Path) -> dict:
    """Check that the bundle is complete and model.keras matches its recorded SHA-256."""
    config = read_config(bundle_dir)
    model_path = Path(bundle_dir) / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"{bundle_dir} is not a complete bundle: {MODEL_FILE} is missing.")
    actual = sha256_of(model_path)
    if actual != config["model_sha256"]:
        raise BundleError(
            f"{model_path} does not match its config.json (SHA-256 {actual[:12]}..., expected "
            f"{config['model_sha256'][:12]}...): the file is corrupted or was replaced."
        )
    return config


def load_bundle(bundle_dir: Path, source: str | None = None) -> Bundle:
    """Verify, then load the model with Keras' safe mode (no arbitrary code from the file)."""
    import keras

    bundle_dir = Path(bundle_dir)
    config = verify_bundle(bundle_dir)
    try:
        model = keras.saving.load_model(bundle_dir / MODEL_FILE, compile=False, safe_mode=True)
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise BundleError(
                f"Refused to load {bundle_dir / MODEL_FILE}: it contains code (a Lambda layer), "
                "which safe mode does not run. Rebuild the model from standard layers."
            ) from error
        raise BundleError(f"Keras could not load {bundle_dir / MODEL_FILE}: {error}") from error
    except Exception as error:  # a damaged zip, an unknown layer class, ...
        raise BundleError(f"Keras could not load {bundle_dir / MODEL_FILE}: {error}") from error
    return Bundle(path=bundle_dir, config=config, model=model, source=source or f"local folder {bundle_dir}")


def download_bundle(repo_id: str, revision: str | None = None, cache_dir: str | None = None) -> Path:
    """Fetch a bundle from the Hub at `revision` into huggingface_hub's cache; return its folder.

    Honours HF_ENDPOINT and HF_HUB_OFFLINE (offline: served from the cache alone), both read
    when huggingface_hub is first imported. A cached model.keras whose hash does not match is
    downloaded again once; if it still does not match, BundleError: never a different model.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

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
    except HFValidationError as error:
        raise BundleError(f"'{repo_id}' is not a valid Hub repo id (expected owner/name): {error}") from error
    except RevisionNotFoundError as error:
        raise BundleError(f"The Hub repo {repo_id} has no revision '{revision}'.") from error
    except RepositoryNotFoundError as error:
        # Some hub servers (olah offline, for one) answer an unknown revision this way too.
        raise BundleError(
            f"The Hub has no repo {repo_id} at revision '{revision or 'main'}' "
            "(check the repo id and revision; a private repo also needs a token)."
        ) from error
    except LocalEntryNotFoundError as error:
        cause = error.__cause__
        if isinstance(cause, OfflineModeIsEnabled):
            reason = "HF_HUB_OFFLINE is set, so nothing is downloaded"
        elif isinstance(cause, HfHubHTTPError):
            reason = (f"the Hub at {constants.ENDPOINT} answered HTTP {cause.response.status_code} "
                      "(check the repo id and revision)")
        else:
            reason = f"the Hub at {constants.ENDPOINT} could not be reached"
        raise BundleError(f"{where} is not in the local cache, and {reason}.") from error
    except HfHubHTTPError as error:  # its message quotes the server's: never pass a token on
        raise BundleError(hide_token(f"The Hub refused the download of {where}: {error}")) from error
    except OSError as error:
        raise BundleError(hide_token(f"Could not download {where}: {error}")) from error


def hide_token(text: str) -> str:
    """`text` with the Hub token masked, should a server ever echo it back in an error.

    Such a message is logged and shown on the page as the fallback notice, to anyone.
    """
    from huggingface_hub import get_token

    token = get_token()
    return text.replace(token, "hf_***") if token else text


def resolve_bundle(environ: dict | None = None, default_dir: Path = DEFAULT_BUNDLE_DIR) -> Bundle:
    """The bundle the app should serve, chosen from the environment.

    MODEL_DIR (a local folder) wins; else MODEL_REPO (with optional MODEL_REVISION)
    from the Hub; else the default shipped with the app (`default_dir`). A configured
    bundle that fails falls back to the default, with a notice saying why, so the Space stays up.
    """
    environ = os.environ if environ is None else environ
    default_source = "default model shipped with the app"
    try:
        if environ.get("MODEL_DIR"):
            return load_bundle(Path(environ["MODEL_DIR"]))
        if environ.get("MODEL_REPO"):
            repo_id, revision = environ["MODEL_REPO"], environ.get("MODEL_REVISION") or None
            folder = download_bundle(repo_id, revision)
            bundle = load_bundle(folder, source=f"Hub repo {repo_id} @ {revision or 'main'}")
            bundle.revision = folder.name  # snapshot folders are named by commit sha
            return bundle
    except BundleError as error:
        logger.error("Serving the default model instead: %s", error)
        bundle = load_bundle(default_dir, source=default_source)
        bundle.notice = f"The configured model could not be loaded, so the default model is served. {error}"
        return bundle
    return load_bundle(default_dir, source=default_source)
