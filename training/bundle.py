"""Write a model bundle (see DESIGN.md) atomically: it appears complete or not at all."""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import keras

from demo.bundle import CONFIG_FILE, GRAPHS_KEY, MODEL_FILE, SCHEMA_VERSION, BundleError, sha256_of

logger = logging.getLogger(__name__)


def serving_model(model: keras.Model) -> keras.Model:
    """The same layers without optimizer or loss, so the file loads with no custom code."""
    return keras.Model(model.inputs, model.outputs, name=model.name)


def library_versions() -> dict:
    import numpy
    import tensorflow

    return {"tensorflow": tensorflow.__version__, "keras": keras.__version__, "numpy": numpy.__version__}


def write_bundle(bundle_dir: Path, model: keras.Model, config: dict,
                 extra_files: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Save `model`, its serving graphs and `config` (plus files made by `extra_files[name](path)`) as a bundle.

    Everything is written into a temporary sibling folder which then replaces
    `bundle_dir` by rename, so a crash midway never leaves a half-written bundle.
    Graphs that cannot be converted do not cost the model: the bundle is written without
    them (the app then converts at start), and the log says why.
    """
    from training.export_graphs import write_graphs

    bundle_dir = Path(bundle_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{bundle_dir.name}.tmp-", dir=bundle_dir.parent))
    try:
        serving_model(model).save(staging / MODEL_FILE)
        config = {"schema_version": SCHEMA_VERSION, **config, "model_sha256": sha256_of(staging / MODEL_FILE)}
        try:
            config[GRAPHS_KEY] = write_graphs(staging, config)
        except BundleError as error:
            for partial in staging.glob("*.tflite"):
                partial.unlink()
            logger.warning("%s gets no serving graphs (%s); the app will convert its model.keras at start. "
                           "Retry with: python -m training.export_graphs %s", bundle_dir, error, bundle_dir)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        for name, write in (extra_files or {}).items():
            write(staging / name)
        replace_folder(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return bundle_dir


def update_bundle(bundle_dir: Path, config_updates: dict,
                  extra_files: dict[str, Callable[[Path], None]] | None = None) -> None:
    """Merge into config.json and add files, each written to a temporary file then renamed."""
    bundle_dir = Path(bundle_dir)
    config = json.loads((bundle_dir / CONFIG_FILE).read_text())
    _deep_merge(config, config_updates)
    atomic_write_text(bundle_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")
    for name, write in (extra_files or {}).items():
        temporary = bundle_dir / f".{name}.tmp-{os.getpid()}{Path(name).suffix}"
        write(temporary)
        os.replace(temporary, bundle_dir / name)


def atomic_write_text(path: Path, text: str) -> None:
    temporary = Path(path).with_name(f".{Path(path).name}.tmp-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


def _deep_merge(target: dict, updates: dict) -> None:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def replace_folder(new: Path, old: Path) -> None:
    """Put the finished folder `new` where `old` is (or is not yet): old stays whole until new is in place."""
    if not old.exists():
        os.replace(new, old)
        return
    retired = old.with_name(f".{old.name}.old-{os.getpid()}")
    os.replace(old, retired)
    os.replace(new, old)
    shutil.rmtree(retired, ignore_errors=True)
