"""The networks a bundle carries, loaded only once they prove to be the bundle's own.

The serving graphs (an ONNX graph, LiteRT graphs) were converted from model.keras by
`training.export_graphs`; each is checked against config.json's record and against the source it
records inside itself, loaded, and run once on a blank photo before it serves anyone. Serving them
imports neither TensorFlow nor Keras. model.keras itself is loaded with Keras' safe mode on, for
bundles without usable graphs and for the runtimes that need the Keras model.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from demo.bundle import CONFIG_FILE, GRAPHS_KEY, MODEL_FILE, BundleConfig, BundleError, GraphError, is_onnx_graph
from demo.engine import canonical_input_shape
from demo.runtimes import (
    GRAPH_WEIGHTS,
    LITERT,
    CarriedGraphs,
    CarriedOnnxGraph,
    graph_source,
    run_interpreter,
    usable_cores,
)

logger = logging.getLogger(__name__)


def load_keras_model(bundle_dir: Path):
    """The bundle's model.keras, loaded with Keras' safe mode (call verify_bundle first)."""
    import keras

    model_path = Path(bundle_dir) / MODEL_FILE
    try:
        return declared_plainly(keras.saving.load_model(model_path, compile=False, safe_mode=True))
    except ValueError as error:
        if "safe_mode" in str(error) or "Lambda" in str(error):
            raise BundleError(
                f"Refused to load {model_path}: it contains code (a Lambda layer), "
                "which safe mode does not run. Rebuild the model from standard layers."
            ) from error
        raise BundleError(f"Keras could not load {model_path}: {error}") from error
    except Exception as error:  # a damaged zip, an unknown layer class, ...
        raise BundleError(f"Keras could not load {model_path}: {error}") from error


def declared_plainly(model):
    """The same layers with a one-element input or output list declared as the tensor itself.

    Bundles written before 2026-12-02 (the shipped one among them) saved their image input as a list of
    one, and Keras 3 then warns "The structure of `inputs` doesn't match" on every call given an array."""
    import keras

    def single(structure):
        return structure[0] if isinstance(structure, (list, tuple)) and len(structure) == 1 else structure

    if single(model.input) is model.input and single(model.output) is model.output:
        return model
    return keras.Model(single(model.input), single(model.output), name=model.name)


def graph_shapes(config: BundleConfig) -> list[tuple | None]:
    """The input shapes a bundle's graphs must cover: None (any height and width: a float graph
    runs as fast so as one fixed to a shape, demo/runtimes.py), or for a model that takes only
    one input, that one."""
    return [canonical_input_shape(config)] if config.fixed_input else [None]


def graph_record(config: BundleConfig) -> dict:
    """config.json's `serving_graphs` record, once it names this very model.keras; GraphError if not."""
    record = config.serving_graphs
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
        raise GraphError(f"{CONFIG_FILE} has no readable `{GRAPHS_KEY}` record.")
    if record.get("model_sha256") != config.model_sha256:
        raise GraphError(f"they were converted from another model.keras (SHA-256 "
                         f"{str(record.get('model_sha256'))[:12]}..., this one is {config.model_sha256[:12]}...).")
    return record


def graph_bytes(bundle_dir: Path, name: str, entry: dict) -> bytes:
    """A carried graph file's bytes, once they have the SHA-256 config.json records; GraphError if not."""
    path = Path(bundle_dir) / name
    if Path(name).name != name or not path.is_file():
        raise GraphError(f"{name} is missing from the bundle.")
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != entry.get("sha256"):
        raise GraphError(f"{name} does not match its {CONFIG_FILE} (SHA-256 {actual[:12]}..., expected "
                         f"{str(entry.get('sha256'))[:12]}...): the file is corrupted, truncated or was replaced.")
    return data


# How far outside 0..1 a float32 sigmoid may round (ONNX Runtime's answers 1.0000001 at times).
PROBABILITY_ROUNDING = 1e-6


def answers_probabilities(answer, input_shape: tuple) -> bool:
    """Whether `answer` is one class probability per pixel of an `input_shape` (N, H, W, 3) input."""
    return (answer.shape == (*input_shape[:3], 1)
            and bool(np.all((answer >= -PROBABILITY_ROUNDING) & (answer <= 1 + PROBABILITY_ROUNDING))))


def verify_graphs(bundle_dir: Path, config: BundleConfig) -> dict[tuple | None, bytes]:
    """The carried LiteRT graphs' bytes by input shape, once each matches config.json; GraphError saying what does not.

    Checked: the record names this very model.keras, every shape the engine needs has a file, each
    file has its recorded SHA-256, is a LiteRT graph, and records inside itself that it was
    converted from this model.keras for that shape (so a graph of another model is refused even
    when its record was edited to match). The ONNX graph is checked on its own (`load_onnx_graph`).
    """
    record = graph_record(config)
    if record.get("weights") != GRAPH_WEIGHTS[LITERT]:
        raise GraphError(f"they store {record.get('weights', 'int8')} weights, not the {GRAPH_WEIGHTS[LITERT]} "
                         f"ones the app serves (an export by an older version): "
                         f"`python -m training.export_graphs {bundle_dir}` refreshes them.")
    by_shape = {}
    for name, entry in record["files"].items():
        if is_onnx_graph(name):
            continue  # checked on its own (`onnx_graph_file`): a bad one leaves the LiteRT graphs served
        data = graph_bytes(bundle_dir, name, entry)
        try:
            origin = graph_source(data)
        except Exception as error:  # truncated or not a flatbuffer at all
            raise GraphError(f"{name} is not a readable LiteRT graph ({error}).") from error
        expected = {"model_sha256": config.model_sha256, "input_shape": entry.get("input_shape")}
        if origin != expected:
            raise GraphError(f"{name} was converted from another model or for another input: it records "
                             f"{origin}, not {expected}.")
        by_shape[tuple(entry["input_shape"]) if entry.get("input_shape") else None] = data
    missing = [shape or "any shape" for shape in graph_shapes(config) if shape not in by_shape]
    if missing:
        raise GraphError(f"no graph for input {', '.join(map(str, missing))}.")
    return by_shape


def load_graphs(bundle_dir: Path, config: BundleConfig):
    """The carried graphs, verified, loaded into LiteRT and each run once (demo.runtimes.CarriedGraphs).

    The run proves a graph loads and answers with probabilities, and packs its weights now rather
    than at a visitor's photo. GraphError if any check fails.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreters = {}
    for shape, data in verify_graphs(bundle_dir, config).items():
        # Planned at its shape; the any-shape graph at the shape most photos (4:3) are fed at.
        planned = shape or canonical_input_shape(config)
        try:
            interpreter = Interpreter(model_content=data, num_threads=usable_cores())
            interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], planned, strict=False)
            interpreter.allocate_tensors()
            answer = run_interpreter(interpreter, np.zeros(planned, np.float32))
        except Exception as error:
            raise GraphError(f"LiteRT could not run the graph for {shape or 'any shape'}: {error}") from error
        if not answers_probabilities(answer, planned):
            raise GraphError(f"the graph for {shape or 'any shape'} did not answer a {planned} input with "
                             f"probabilities of its size (shape {answer.shape}, values {answer.min()}..{answer.max()}).")
        interpreters[shape] = interpreter
    logger.info("Serving the LiteRT graphs %s carries (float16 weights; SHA-256 checked): %s.", bundle_dir,
                ", ".join(sorted(config.serving_graphs["files"])))
    return CarriedGraphs(interpreters, keras_model=lambda: load_keras_model(bundle_dir))


def onnx_graph_file(bundle_dir: Path, config: BundleConfig) -> tuple[str, dict, bytes]:
    """The carried ONNX graph's name, record and bytes, once its SHA-256 matches; GraphError if not."""
    record = graph_record(config)
    onnx_files = [(name, entry) for name, entry in record["files"].items() if is_onnx_graph(name)]
    if not onnx_files:
        raise GraphError("it carries no ONNX graph (an export by an older version, or one whose ONNX export failed)")
    name, entry = onnx_files[0]
    return name, entry, graph_bytes(bundle_dir, name, entry)


def load_onnx_graph(bundle_dir: Path, config: BundleConfig):
    """The carried ONNX graph, checked as `verify_graphs` checks LiteRT ones (its record, its SHA-256,
    the model.keras and input shape it records inside itself), loaded into ONNX Runtime and run once
    (demo.runtimes.CarriedOnnxGraph). GraphError if any check fails; ImportError without ONNX Runtime."""
    name, entry, data = onnx_graph_file(bundle_dir, config)
    input_shape = entry.get("input_shape")
    if bool(input_shape) != config.fixed_input:
        raise GraphError(f"{name} takes {'one shape' if input_shape else 'any shape'}, but the model "
                         f"{'takes only one' if config.fixed_input else 'is fully convolutional'}.")
    planned = canonical_input_shape(config)
    try:
        # Checked with the session the app runs most photos through (fixed to 4:3 photos' shape),
        # so this pass also warms it; the any-shape session waits for the first photo of another shape.
        graph = CarriedOnnxGraph(data, tuple(input_shape) if input_shape else None,
                                 keras_model=lambda: load_keras_model(bundle_dir), first_shape=planned,
                                 weights=entry.get("weights", "float16"))
        origin = graph.source()
    except ImportError:
        raise
    except Exception as error:  # not an ONNX file, an op it lacks, unreadable metadata, ...
        raise GraphError(f"ONNX Runtime could not run {name}: {error}") from error
    expected = {"model_sha256": config.model_sha256, "input_shape": input_shape}
    if origin != expected:
        raise GraphError(f"{name} was converted from another model or for another input: it records "
                         f"{origin}, not {expected}.")
    try:
        session = graph.session_for(planned)
        answer = session.run(None, {session.get_inputs()[0].name: np.zeros(planned, np.float32)})[0]
    except Exception as error:
        raise GraphError(f"ONNX Runtime could not run {name}: {error}") from error
    if not answers_probabilities(answer, planned):
        raise GraphError(f"{name} did not answer a {planned} input with probabilities of its size "
                         f"(shape {answer.shape}, values {answer.min()}..{answer.max()}).")
    logger.info("Serving the ONNX graph %s carries (%s; SHA-256 checked).", bundle_dir, name)
    return graph

