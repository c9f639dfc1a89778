"""The one writer of model bundles (docs/bundle.md): every bundle is finished here and published in one rename.

A bundle is never edited where it stands. `finishing_bundle` gives a `BundleDraft`: a hidden staging
folder beside the bundle (empty for a new bundle, else a copy of the old one) and the config that will
become its config.json. The caller saves a model or fresh graphs, adds plots and reports, and changes
the config; on leaving the block, config.json and the model card are written from that config, the
folder is verified as the app verifies a bundle, and it replaces the old one in one rename. On any
error the staging folder is deleted and the old bundle stays as it was.

Who finishes bundles through it: the end of training (`training.train`), `training.evaluate
--update-bundle` (threshold, metrics, feed scale), `training.export_graphs` (serving graphs) and the
benchmarks' bundles (`bench`). No other module writes config.json.
"""
from __future__ import annotations

import fnmatch
import logging
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import keras

from demo.bundle import CONFIG_FILE, MODEL_FILE, Bundle, BundleConfig, BundleError
from demo.bundle_files import atomic_write_text, replace_folder, sha256_of, staging_folder_beside, verify_bundle
from demo.loading import load_bundle
from training.graphs import GRAPH_SUFFIXES, Calibration, write_graphs
from training.model_card import write_model_card

logger = logging.getLogger(__name__)


def serving_model(model: keras.Model) -> keras.Model:
    """The same layers without optimizer or loss, so the file loads with no custom code.

    `model.input`, not `model.inputs`: the latter is always a list, and a model saved with its one input
    as a list makes Keras warn on every call given a plain array (see demo.graphs.declared_plainly)."""
    return keras.Model(model.input, model.output, name=model.name)


def library_versions() -> dict:
    import numpy
    import tensorflow

    return {"tensorflow": tensorflow.__version__, "keras": keras.__version__, "numpy": numpy.__version__}


@dataclass
class BundleDraft:
    """A bundle being finished: files go into `folder`, and `config` becomes its config.json when published."""

    folder: Path
    config: BundleConfig

    def save_model(self, model: keras.Model) -> None:
        """Save `model` as the bundle's model.keras, with serving graphs converted from it.

        Graphs that cannot be converted do not cost the model: the bundle is published without them
        (the app then converts at start), or, when only the ONNX export fails, with the LiteRT graphs
        alone (the app serves those); the log says why.
        """
        serving_model(model).save(self.folder / MODEL_FILE)
        self.config.model_sha256 = sha256_of(self.folder / MODEL_FILE)
        try:
            self.export_graphs(onnx_optional=True)
        except BundleError as error:
            self.remove_graphs()
            logger.warning("%s gets no serving graphs (%s); the app will convert its model.keras at start. "
                           "Retry with: python -m training.export_graphs BUNDLE_DIR", self.folder, error)

    def export_graphs(self, calibration: Calibration | None = None, onnx_optional: bool = False) -> dict:
        """Replace the serving graphs with ones converted from this draft's model.keras (`training.graphs`)."""
        self.remove_graphs()
        self.config.serving_graphs = None
        record = write_graphs(self.folder, self.config, calibration, onnx_optional=onnx_optional)
        self.config.serving_graphs = record | {"converted_with": library_versions()}
        return self.config.serving_graphs

    def remove_graphs(self) -> None:
        for path in self.folder.iterdir():
            if any(fnmatch.fnmatch(path.name, f"*{suffix}") for suffix in GRAPH_SUFFIXES):
                path.unlink()

    def loaded(self, runtime: str | None = None) -> Bundle:
        """The draft as the app would load it (config.json written as it stands): to evaluate the model
        through the serving engine, or to run the app's own checks before publishing."""
        self._write_config()
        return load_bundle(self.folder, source=f"bundle being finished in {self.folder}", runtime=runtime)

    def _write_config(self) -> None:
        atomic_write_text(self.folder / CONFIG_FILE, self.config.to_json())


@contextmanager
def finishing_bundle(bundle_dir: Path, config: BundleConfig | None = None, *, start_from: Path | None = None,
                     leave_out: tuple[str, ...] = ()) -> Iterator[BundleDraft]:
    """A draft of the bundle at `bundle_dir`, published there in one rename when the block ends without error.

    With `config`, a new bundle (the draft starts empty; save a model into it). Without, an update of
    the bundle at `start_from` (default: `bundle_dir` itself), which must verify: the draft starts as
    a copy of its files (but hidden ones and `leave_out` patterns) and of its config.
    """
    bundle_dir = Path(bundle_dir)
    if config is None:
        start_from = Path(start_from or bundle_dir)
        config = verify_bundle(start_from)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder_beside(bundle_dir)
    try:
        if start_from is not None:
            # Leftovers of interrupted writes (hidden names) stay behind.
            shutil.copytree(start_from, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*", *leave_out))
        draft = BundleDraft(staging, config)
        yield draft
        draft._write_config()
        write_model_card(staging)  # the card is made from config.json as published
        verify_bundle(staging)
        replace_folder(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_bundle(bundle_dir: Path, model: keras.Model, config: BundleConfig) -> Path:
    """Publish `model` and `config` as a new bundle at `bundle_dir` (its graphs converted, its card written)."""
    with finishing_bundle(bundle_dir, config) as draft:
        draft.save_model(model)
    return Path(bundle_dir)
