"""What the app serves: the bundle chosen from the environment, loaded for the chosen runtime.

`resolve_bundle` picks the bundle (a local folder, a Hub repo at a pinned revision, or the default
shipped with the app, which is also the fallback, with a notice, when the configured one fails);
`load_bundle` verifies it and loads the network: the carried ONNX graph, else the carried LiteRT
graphs, else model.keras, saying in the log why each step fell through.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from demo.bundle import Bundle, BundleConfig, BundleError, GraphError
from demo.bundle_files import verify_bundle
from demo.graphs import load_graphs, load_keras_model, load_onnx_graph
from demo.hub import download_bundle
from demo.runtimes import LITERT, ONNX_RUNTIME, chosen_runtime

logger = logging.getLogger(__name__)

# The trained model that ships with the app, served when nothing else is configured.
DEFAULT_BUNDLE_DIR = Path(__file__).resolve().parent / "default_model"


def load_bundle(bundle_dir: Path, source: str | None = None, runtime: str | None = None) -> Bundle:
    """Verify the bundle, then load its network for `runtime` (default: MODEL_RUNTIME, else LiteRT).

    ONNX Runtime serves the ONNX graph the bundle carries; without it (or when it fails a check),
    LiteRT serves its LiteRT graphs; without those and for the other runtimes, model.keras is
    loaded with Keras' safe mode (no arbitrary code from the file).
    """
    bundle_dir = Path(bundle_dir)
    config = verify_bundle(bundle_dir)
    runtime = chosen_runtime(runtime)
    network = carried_onnx_graph(bundle_dir, config) if runtime == ONNX_RUNTIME else None
    if network is None and runtime in (ONNX_RUNTIME, LITERT):
        network = carried_graphs(bundle_dir, config)
    return Bundle(path=bundle_dir, config=config, model=network or load_keras_model(bundle_dir),
                  source=source or f"local folder {bundle_dir}")


def carried_graphs(bundle_dir: Path, config: BundleConfig):
    """The bundle's graphs, loaded (`load_graphs`), or None with the reason in the log: the caller
    then loads model.keras with Keras and converts it, as for a bundle without graphs."""
    if config.serving_graphs is None:
        logger.warning("%s carries no serving graphs (an older bundle, or one made elsewhere): loading its "
                       "model.keras with Keras and converting it (seconds, and TensorFlow's memory). "
                       "`python -m training.export_graphs %s` adds them.", bundle_dir, bundle_dir)
        return None
    try:
        return load_graphs(bundle_dir, config)
    except GraphError as error:
        logger.warning("Refused the serving graphs %s carries: %s Loading its model.keras with Keras and "
                       "converting it instead.", bundle_dir, error)
        return None


def carried_onnx_graph(bundle_dir: Path, config: BundleConfig):
    """The bundle's ONNX graph, loaded (`load_onnx_graph`), or None with the reason in the log: the
    caller then serves the LiteRT graphs."""
    if config.serving_graphs is None:
        return None  # `carried_graphs` says so
    try:
        return load_onnx_graph(bundle_dir, config)
    except GraphError as error:
        logger.warning("No ONNX graph of %s can be served: %s; serving LiteRT instead. "
                       "`python -m training.export_graphs %s` exports one.", bundle_dir, error, bundle_dir)
    except ImportError as error:
        logger.warning("ONNX Runtime cannot be imported (%s); serving LiteRT instead.", error)
    return None



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
