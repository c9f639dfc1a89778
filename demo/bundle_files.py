"""A bundle's files: reading and verifying a bundle folder, and writing files so that none is ever seen half-written.

Readers (the app, evaluation, the Hub commands) get config.json through `read_config` and check a
bundle through `verify_bundle` (model.keras against the SHA-256 config.json records). The atomic
writes serve everything that saves a file a person or a reader relies on: bundles
(`training.bundle`), checkpoints, reports, the app's downloads.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from demo.bundle import CONFIG_FILE, MODEL_FILE, SCHEMA_VERSION, BundleConfig, BundleError

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_config(bundle_dir: Path) -> BundleConfig:
    """Parse and check config.json; raise BundleError naming what is missing."""
    bundle_dir = Path(bundle_dir)
    config_path = bundle_dir / CONFIG_FILE
    if not config_path.is_file():
        raise BundleError(f"{bundle_dir} is not a model bundle: {CONFIG_FILE} is missing.")
    try:
        data = json.loads(config_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise BundleError(f"{config_path} is not a JSON object.")
    if isinstance(data.get("schema_version"), int) and data["schema_version"] > SCHEMA_VERSION:
        raise BundleError(
            f"{config_path} has schema version {data['schema_version']}; "
            f"this app reads up to {SCHEMA_VERSION}. Update the app."
        )
    try:
        return BundleConfig.from_dict(data)
    except BundleError as error:
        raise BundleError(f"{config_path} {error}.") from None


def verify_bundle(bundle_dir: Path) -> BundleConfig:
    """Check that the bundle is complete and model.keras matches its recorded SHA-256."""
    config = read_config(bundle_dir)
    model_path = Path(bundle_dir) / MODEL_FILE
    if not model_path.is_file():
        raise BundleError(f"{bundle_dir} is not a complete bundle: {MODEL_FILE} is missing.")
    actual = sha256_of(model_path)
    if actual != config.model_sha256:
        raise BundleError(
            f"{model_path} does not match its config.json (SHA-256 {actual[:12]}..., expected "
            f"{config.model_sha256[:12]}...): the file is corrupted or was replaced."
        )
    return config


_UMASK = os.umask(0o022)  # read once (there is no way to read it without setting it), then restored
os.umask(_UMASK)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """`write(temporary)` a file beside `path`, then rename it to `path`: `path` is whole or as it was.

    The temporary name is hidden, unique (threads and processes may write the same `path` at once)
    and keeps the suffix, for writers that choose the format by it (plots, Keras checkpoints).
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(descriptor)
    os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp's 0600 would leave the file unreadable to other users
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda temporary: temporary.write_text(text))


def replace_folder(new: Path, old: Path) -> None:
    """Put the finished folder `new` where `old` is (or is not yet): old stays whole until new is in place."""
    if not old.exists():
        os.replace(new, old)
        return
    retired = old.with_name(f".{old.name}.old-{os.getpid()}")
    os.replace(old, retired)
    os.replace(new, old)
    shutil.rmtree(retired, ignore_errors=True)


def staging_folder_beside(folder: Path) -> Path:
    """A new hidden folder beside `folder`, to be renamed into its place once complete; with the
    permissions a plain mkdir gives (mkdtemp's 0700 would stay with the bundle)."""
    staging = Path(tempfile.mkdtemp(prefix=f".{Path(folder).name}.tmp-", dir=Path(folder).parent))
    os.chmod(staging, 0o777 & ~_UMASK)
    return staging
