"""Add or refresh a bundle's serving graphs: an ONNX graph and LiteRT graphs, converted from its model.keras.

    python -m training.export_graphs BUNDLE_DIR

The app serves these graphs without importing TensorFlow or Keras (demo/runtimes.py): the ONNX
graph with ONNX Runtime (the fastest measured), else the LiteRT ones. For fully
convolutional models each is one graph with dynamic height and width (named "height" and
"width" in the ONNX graph, so a session can fix them to the shape most photos come at); for a
model with one input size, a graph for that size. Both store their weights as float16 (half the
file; arithmetic is float32). Each
graph records inside itself the SHA-256 of the model.keras it was converted from and its input
shape; config.json records each file's SHA-256 (`serving_graphs`), and the model card lists them.
model.keras stays the source of truth: run this again whenever it changes (training.train and
training.bundle.write_bundle do it for new bundles).

The bundle is copied, completed and checked as the app will check it, then put in place of the
old folder in one rename, so a failure leaves the bundle as it was.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from demo.bundle import (
    CARD_FILE,
    BundleConfig,
    BundleError,
    graph_shapes,
    load_graphs,
    load_keras_model,
    load_onnx_graph,
    replace_folder,
    sha256_of,
    staging_folder_beside,
    verify_bundle,
    write_config,
)
from demo.engine import canonical_input_shape
from demo.runtimes import (
    GRAPH_SOURCE_METADATA,
    GRAPH_WEIGHTS,
    LITERT,
    ONNX_DIMENSIONS,
    ONNX_RUNTIME,
    CarriedOnnxGraph,
    first_line,
    release_freed_memory,
    run_interpreter,
    tflite_flatbuffer,
)

# What the carried LiteRT graphs are (the record's "runtime" and "weights"; the ONNX graph's entry names its own).
GRAPH_RUNTIME = "LiteRT (XNNPACK), float16 weights, float32 arithmetic"


def graph_file_name(shape: tuple | None, suffix: str = ".tflite") -> str:
    return f"graph_{shape[1]}x{shape[2]}{suffix}" if shape else f"graph_any_shape{suffix}"


def onnx_graph(model, shape: tuple | None, source: dict) -> bytes:
    """The model's inference graph in ONNX (Keras' export, tf2onnx underneath), with its free height
    and width named `ONNX_DIMENSIONS`, its weights stored as float16 (`with_float16_weights`) and
    `source` stored as JSON in its metadata."""
    import tempfile
    import warnings

    import onnx
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # Keras' tf2onnx patch probes np.object
            model.export(path, format="onnx", verbose=False,
                         input_signature=[tf.TensorSpec(shape or (1, None, None, 3), tf.float32, name="image")])
        graph = onnx.load(path)
    if shape is None:
        for tensor in (*graph.graph.input, *graph.graph.output):
            for dimension, name in zip(tensor.type.tensor_type.shape.dim[1:3], ONNX_DIMENSIONS):
                dimension.dim_param = name
    with_float16_weights(graph)
    graph.metadata_props.add(key=GRAPH_SOURCE_METADATA, value=json.dumps(source))
    return graph.SerializeToString()


def with_float16_weights(graph) -> None:
    """Store `graph`'s float32 weights as float16, each widened back by a Cast node: half the file,
    as the LiteRT graphs. ONNX Runtime folds the casts into float32 weights when it loads the graph,
    so the arithmetic stays float32: BENCHMARKS.md section 4 has it as fast as a float32 graph
    (55.6 against 57.4 ms), its probabilities within 0.01 of TensorFlow's and the same val IoU."""
    from onnx import TensorProto, helper, numpy_helper

    weights, casts = [], []
    for weight in graph.graph.initializer:
        if weight.data_type != TensorProto.FLOAT or int(np.prod(weight.dims)) < 16:  # scalars, shapes: as they are
            weights.append(weight)
            continue
        narrow = f"{weight.name}__float16"
        weights.append(numpy_helper.from_array(numpy_helper.to_array(weight).astype(np.float16), narrow))
        casts.append(helper.make_node("Cast", [narrow], [weight.name], to=TensorProto.FLOAT))
    nodes = list(graph.graph.node)
    del graph.graph.initializer[:], graph.graph.node[:]
    graph.graph.initializer.extend(weights)
    graph.graph.node.extend(casts + nodes)  # before every use: the node list stays in dependency order


def with_source(flatbuffer: bytes, source: dict) -> bytes:
    """The graph with `source` stored as JSON in its metadata (`GRAPH_SOURCE_METADATA`), which
    `demo.runtimes.graph_source` reads back without TensorFlow."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
    model.buffers.append(schema.BufferT(data=np.frombuffer(json.dumps(source).encode(), np.uint8)))
    model.metadata = [*(model.metadata or []),
                      schema.MetadataT(name=GRAPH_SOURCE_METADATA, buffer=len(model.buffers) - 1)]
    builder = flatbuffers.Builder(len(flatbuffer) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def write_graphs(folder: Path, config: BundleConfig) -> dict:
    """Convert `folder`/model.keras into the graphs the app needs, written into `folder`; return
    config.json's record of them. The Keras model is read back from the file, in safe mode, so
    the graphs are what that file computes; each graph's largest difference from it on a probe
    image is recorded."""
    from ai_edge_litert.interpreter import Interpreter

    from training.bundle import library_versions

    model = load_keras_model(folder)
    probe_shape = canonical_input_shape(config)
    probe = np.random.default_rng(0).uniform(0, 255, probe_shape).astype(np.float32)
    expected = model(probe, training=False).numpy()
    files = {}
    for shape in graph_shapes(config):
        input_shape = list(shape) if shape else None
        try:
            flatbuffer = tflite_flatbuffer(model, shape or (1, None, None, 3), weights=GRAPH_WEIGHTS[LITERT])
        except Exception as error:  # an op the converter lacks, say
            raise BundleError(f"the LiteRT converter failed for input {shape or 'of any shape'}: "
                              f"{first_line(error)}") from error
        flatbuffer = with_source(flatbuffer, {"model_sha256": config.model_sha256, "input_shape": input_shape})
        release_freed_memory()
        interpreter = Interpreter(model_content=flatbuffer)
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], probe_shape, strict=False)
        interpreter.allocate_tensors()
        difference = float(np.max(np.abs(run_interpreter(interpreter, probe) - expected)))
        name = graph_file_name(shape)
        (folder / name).write_bytes(flatbuffer)
        files[name] = {"input_shape": input_shape, "sha256": sha256_of(folder / name), "bytes": len(flatbuffer),
                       "max_difference_from_keras": round(difference, 4)}
    files.update(write_onnx_graph(folder, config, model, probe, expected))
    return {"runtime": GRAPH_RUNTIME, "weights": GRAPH_WEIGHTS[LITERT], "model_sha256": config.model_sha256,
            "files": files,
            "converted_with": library_versions()}


def write_onnx_graph(folder: Path, config: BundleConfig, model, probe: np.ndarray, expected: np.ndarray) -> dict:
    """The ONNX graph of `model` written into `folder`, and its entry in config.json's record."""
    shape = None if not config.fixed_input else canonical_input_shape(config)
    input_shape = list(shape) if shape else None
    try:
        data = onnx_graph(model, shape, {"model_sha256": config.model_sha256, "input_shape": input_shape})
    except Exception as error:  # an op tf2onnx lacks, say
        raise BundleError(f"the ONNX export failed for input {shape or 'of any shape'}: {first_line(error)}") from error
    release_freed_memory()
    session = CarriedOnnxGraph(data, shape, keras_model=lambda: model).session
    difference = float(np.max(np.abs(session.run(None, {session.get_inputs()[0].name: probe})[0] - expected)))
    name = graph_file_name(shape, ".onnx")
    (folder / name).write_bytes(data)
    return {name: {"runtime": ONNX_RUNTIME, "weights": "float16", "input_shape": input_shape,
                   "sha256": sha256_of(folder / name), "bytes": len(data),
                   "max_difference_from_keras": round(difference, 4)}}


def export_graphs(bundle_dir: Path) -> dict:
    """Give the bundle at `bundle_dir` fresh graphs (replacing any it has); return their record."""
    from training.model_card import write_model_card

    bundle_dir = Path(bundle_dir)
    config = verify_bundle(bundle_dir)
    staging = staging_folder_beside(bundle_dir)
    try:
        # The old graphs and leftovers of interrupted writes stay behind.
        shutil.copytree(bundle_dir, staging, dirs_exist_ok=True,
                        ignore=lambda folder, names: [name for name in names
                                                      if name.startswith(".") or name.endswith((".tflite", ".onnx"))])
        config.serving_graphs = write_graphs(staging, config)
        write_config(staging, config)
        load_graphs(staging, config)  # the app's own checks, before anything is replaced
        load_onnx_graph(staging, config)
        if (staging / CARD_FILE).is_file():
            write_model_card(staging)  # the card lists the graphs
        replace_folder(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return config.serving_graphs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.export_graphs", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (model.keras + config.json)")
    args = parser.parse_args(argv)
    try:
        record = export_graphs(args.bundle)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for name, entry in record["files"].items():
        shape = "x".join(map(str, entry["input_shape"][1:3])) if entry["input_shape"] else "any height and width"
        print(f"{args.bundle / name}: {shape}, {entry['bytes'] / 2**20:.1f} MiB, SHA-256 {entry['sha256'][:12]}..., "
              f"largest difference from model.keras on a probe image {entry['max_difference_from_keras']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
