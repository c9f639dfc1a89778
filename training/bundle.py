"""Save a Keras model as a model bundle (see DESIGN.md): the training side of `demo.bundle`.

`demo.bundle` owns the contract (config.json as `BundleConfig`, reading, verifying, publishing in
one rename); this module adds what needs Keras and the LiteRT converter: model.keras without its
optimizer, the serving graphs converted from it, and the library versions a bundle records.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import keras

from demo.bundle import MODEL_FILE, BundleConfig, BundleError, sha256_of, staged_bundle, write_config

logger = logging.getLogger(__name__)


def serving_model(model: keras.Model) -> keras.Model:
    """The same layers without optimizer or loss, so the file loads with no custom code.

    `model.input`, not `model.inputs`: the latter is always a list, and a model saved with its one input
    as a list makes Keras warn on every call given a plain array (see demo.bundle.declared_plainly)."""
    return keras.Model(model.input, model.output, name=model.name)


def library_versions() -> dict:
    import numpy
    import tensorflow

    return {"tensorflow": tensorflow.__version__, "keras": keras.__version__, "numpy": numpy.__version__}


def write_model_files(folder: Path, model: keras.Model, config: BundleConfig) -> BundleConfig:
    """Save `model` into `folder` with its serving graphs and config.json (recording their hashes in `config`).

    Graphs that cannot be converted do not cost the model: the bundle is written without
    them (the app then converts at start), or, when only the ONNX export fails, with the LiteRT
    graphs alone (the app serves those); the log says why.
    """
    from training.export_graphs import write_graphs

    folder = Path(folder)
    serving_model(model).save(folder / MODEL_FILE)
    config.model_sha256 = sha256_of(folder / MODEL_FILE)
    try:
        config.serving_graphs = write_graphs(folder, config, onnx_optional=True)
    except BundleError as error:
        for partial in folder.glob("*.tflite"):
            partial.unlink()
        logger.warning("%s gets no serving graphs (%s); the app will convert its model.keras at start. "
                       "Retry with: python -m training.export_graphs BUNDLE_DIR", folder, error)
    write_config(folder, config)
    return config


def write_bundle(bundle_dir: Path, model: keras.Model, config: BundleConfig,
                 extra_files: dict[str, Callable[[Path], None]] | None = None) -> Path:
    """Save `model`, its serving graphs and `config` (plus files made by `extra_files[name](path)`) as a bundle.

    Everything is written into a temporary sibling folder which then replaces
    `bundle_dir` by rename, so a crash midway never leaves a half-written bundle.
    """
    with staged_bundle(bundle_dir) as staging:
        write_model_files(staging, model, config)
        for name, write in (extra_files or {}).items():
            write(staging / name)
    return Path(bundle_dir)
