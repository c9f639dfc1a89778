"""Model bundles: the one contract between training and serving (see DESIGN.md).

A bundle is a folder with `model.keras`, `config.json` (which carries the SHA-256
of model.keras), a model card and plots, and usually the serving graphs converted from
model.keras (`serving_graphs` in config.json, written by `training.export_graphs`).
This module owns the contract: `BundleConfig` is config.json, typed, which every writer
builds and every reader gets; it reads, writes and verifies bundles, and publishes a new
one in one rename (`staged_bundle`; `training.bundle` saves the Keras model into it). It
finds one (a local folder, a Hugging Face Hub repo at a pinned revision, or the default
shipped with the app) and checks its hashes. It serves the carried graphs, which needs
neither TensorFlow nor Keras; a bundle without them, or whose graphs fail a check, is served
the older way, its model.keras loaded with Keras' safe mode on and converted, and the log says so.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Iterator

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
HUB_PATTERNS = [MODEL_FILE, CONFIG_FILE, CARD_FILE, "*.png", "*.json", "*.tflite", "*.onnx"]
# config.json's record of the carried graphs: {"model_sha256": the model.keras they were converted
# from, "weights": how the LiteRT graphs store theirs, "files": {name: {"input_shape": [1, H, W, 3]
# (null: any), "sha256": ..., "runtime": "onnxruntime" for the ONNX graph (absent: LiteRT)}}, ...}.
GRAPHS_KEY = "serving_graphs"
ONNX_SUFFIX = ".onnx"


class BundleError(RuntimeError):
    """A bundle that cannot be served; the message says what failed and where."""


class GraphError(BundleError):
    """Carried graphs that cannot be served (the bundle's model.keras still can be)."""


@dataclass
class TargetClass:
    """The class the model segments: its id in the dataset's label maps, and its name."""

    id: int
    name: str


@dataclass
class DatasetInfo:
    """What the model learnt from. Every field is optional: older bundles record less."""

    name: str | None = None
    train_split: str | None = None
    selection_split: str | None = None  # where the threshold (and, with --keep best, the epoch) was chosen
    train_drives: list[str] | None = None  # the CamVid drives each split's frames come from
    val_drives: list[str] | None = None
    extra: dict = field(default_factory=dict)  # keys this version does not know, kept as they were


@dataclass
class BundleConfig:
    """config.json, typed: every writer builds one and every reader gets one (`read_config`).

    Serving needs the first block (what `REQUIRED_CONFIG_KEYS` names); the rest describes the
    model. Free-form records (`metrics` by split, `training`, `versions`, `serving_graphs`, whose
    JSON shape `training.export_graphs` owns) stay dicts. Keys this version does not know are kept
    in `extra` and written back unchanged, so a newer tool's additions survive an update.
    """

    architecture: str
    input_size: tuple[int, int]  # (height, width) the model is fed at: its training size unless
    # a scale was chosen on held-out drives (`input_size_selected_on`; `trained_input_size` keeps the other)
    resize: str  # "stretch" (exactly input_size) or "keep_aspect" (as many pixels, padded to the stride)
    stride: int  # height and width fed to the network are multiples of this
    target_class: TargetClass
    threshold: float  # the default threshold: car where the probability reaches it
    test_time_flip: bool = False  # average each photo's answer with its mirror image's
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    parameters: int | None = None
    gflops_per_image: float | None = None
    training: dict = field(default_factory=dict)  # the training arguments and what the run measured
    versions: dict = field(default_factory=dict)
    created: str | None = None
    model_sha256: str = ""  # of model.keras; `training.bundle.write_model_files` fills it in
    threshold_selected_on: str | None = None  # "val", or "held-out drives ..."
    input_size_selected_on: str | None = None  # None: fed at the training size; else "held-out drives ..."
    metrics: dict = field(default_factory=dict)  # split (and "held_out_drives") -> figures
    serving_graphs: dict | None = None  # the carried graphs' record (see GRAPHS_KEY)
    schema_version: int = SCHEMA_VERSION
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> BundleConfig:
        """The config of a parsed config.json; BundleError naming the required keys it lacks."""
        missing = [key for key in REQUIRED_CONFIG_KEYS if key not in data]
        if missing:
            raise BundleError(f"lacks {', '.join(missing)}")
        known = {item.name for item in fields(cls)} - {"extra", "dataset", "target_class", "input_size"}
        dataset = dict(data.get("dataset") or {})
        dataset_known = {item.name for item in fields(DatasetInfo)} - {"extra"}
        return cls(
            **{key: value for key, value in data.items() if key in known},
            input_size=tuple(data["input_size"]),
            target_class=TargetClass(data["target_class"]["id"], data["target_class"]["name"]),
            dataset=DatasetInfo(**{key: dataset.pop(key) for key in dataset_known & set(dataset)}, extra=dataset),
            extra={key: value for key, value in data.items()
                   if key not in known | {"dataset", "target_class", "input_size"}},
        )

    @classmethod
    def from_json(cls, text: str) -> BundleConfig:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict:
        """config.json's content: unset and empty optional fields left out, unknown keys kept."""
        data = {"schema_version": self.schema_version}
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name in ("schema_version", "extra") or value is None or value == {}:
                continue
            if item.name == "input_size":
                value = list(value)
            elif item.name == "target_class":
                value = asdict(value)
            elif item.name == "dataset":
                value = {key: entry for key, entry in asdict(value).items()
                         if key != "extra" and entry is not None} | value.extra
                if not value:
                    continue
            data[item.name] = value
        return data | self.extra

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @property
    def trained_input_size(self) -> tuple[int, int]:
        """(height, width) the training frames were resized to (what `input_size` is, unless a feed
        scale was chosen later)."""
        return tuple(self.training.get("input_size") or self.input_size)

    @property
    def scales_text(self) -> str:
        """The training and feed scales in words: "trained at 336x448, fed at 288x384", or
        "trained at 336x448" when photos are fed at the training scale."""
        trained = "x".join(map(str, self.trained_input_size))
        fed = "x".join(map(str, self.input_size))
        return f"trained at {trained}" + (f", fed at {fed}" if fed != trained else "")

    @property
    def fixed_input(self) -> bool:
        """Whether the network takes only its input size (every photo stretched to it)."""
        return self.resize == "stretch"

    def fed_at(self, size: tuple[int, int], where: object = "this bundle") -> BundleConfig:
        """A copy whose photos are fed at the scale of `size` (height, width): what-ifs and int8
        calibration at another scale. BundleError, naming `where`, for a fixed-size model."""
        if self.fixed_input and tuple(size) != tuple(self.input_size):
            height, width = self.input_size
            raise BundleError(f"{where} holds a fixed-size model: it takes only {height}x{width}.")
        return replace(self, input_size=tuple(size))

    @property
    def val_iou(self) -> float | None:
        return self.metrics.get("val", {}).get("iou")

    @property
    def held_out_drives(self) -> dict:
        """Drive -> figures of the same recipe trained without that drive (`training.holdout`)."""
        return self.metrics.get("held_out_drives") or {}


@dataclass
class Bundle:
    path: Path
    config: BundleConfig
    model: object  # the network: a Keras model, or carried graphs (demo.runtimes.CarriedOnnxGraph, CarriedGraphs)
    source: str  # for people: where it came from ("local folder ...", "hub org/name@rev")
    notice: str = ""  # set when this is a fallback the user should know about
    revision: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def val_iou(self) -> float | None:
        return self.config.val_iou

    def feed_at(self, size: tuple[int, int]) -> None:
        """Feed photos at the scale of `size` (height, width) instead of the config's: a what-if of
        `training.evaluate --input-size` and `bench.compare_bundles`. BundleError for a fixed-size model."""
        self.config.input_size = self.config.fed_at(size, self.path).input_size


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


def write_config(bundle_dir: Path, config: BundleConfig) -> None:
    """Write config.json (to a temporary name, then renamed: readers never see half of it)."""
    atomic_write_text(Path(bundle_dir) / CONFIG_FILE, config.to_json())


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


@contextmanager
def staged_bundle(bundle_dir: Path) -> Iterator[Path]:
    """A temporary folder beside `bundle_dir` to fill with a complete bundle, which replaces
    `bundle_dir` in one rename once it verifies; on any error it is deleted and `bundle_dir`
    stays as it was, so no half-written or half-updated bundle is ever in place."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_folder_beside(bundle_dir)
    try:
        yield staging
        verify_bundle(staging)
        replace_folder(staging, bundle_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def load_bundle(bundle_dir: Path, source: str | None = None, runtime: str | None = None) -> Bundle:
    """Verify the bundle, then load its network for `runtime` (default: MODEL_RUNTIME, else LiteRT).

    ONNX Runtime serves the ONNX graph the bundle carries; without it (or when it fails a check),
    LiteRT serves its LiteRT graphs; without those and for the other runtimes, model.keras is
    loaded with Keras' safe mode (no arbitrary code from the file).
    """
    from demo.runtimes import LITERT, ONNX_RUNTIME, chosen_runtime

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
    from demo.engine import canonical_input_shape

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


def is_onnx_graph(name: str) -> bool:
    return name.endswith(ONNX_SUFFIX)


def onnx_graph_weights(config: BundleConfig) -> str | None:
    """How the carried ONNX graph computes, as its record says: "float16" (float16 weights, float32
    arithmetic) or "int8" (int8 weights and uint8 activations); None for a bundle without one."""
    files = (config.serving_graphs or {}).get("files", {})
    return next((entry.get("weights", "float16") for name, entry in files.items() if is_onnx_graph(name)), None)


# How far outside 0..1 a float32 sigmoid may round (ONNX Runtime's answers 1.0000001 at times).
PROBABILITY_ROUNDING = 1e-6


def answers_probabilities(answer, input_shape: tuple) -> bool:
    """Whether `answer` is one car probability per pixel of an `input_shape` (N, H, W, 3) input."""
    import numpy as np

    return (answer.shape == (*input_shape[:3], 1)
            and bool(np.all((answer >= -PROBABILITY_ROUNDING) & (answer <= 1 + PROBABILITY_ROUNDING))))


def verify_graphs(bundle_dir: Path, config: BundleConfig) -> dict[tuple | None, bytes]:
    """The carried LiteRT graphs' bytes by input shape, once each matches config.json; GraphError saying what does not.

    Checked: the record names this very model.keras, every shape the engine needs has a file, each
    file has its recorded SHA-256, is a LiteRT graph, and records inside itself that it was
    converted from this model.keras for that shape (so a graph of another model is refused even
    when its record was edited to match). The ONNX graph is checked on its own (`load_onnx_graph`).
    """
    from demo.runtimes import GRAPH_WEIGHTS, LITERT, graph_source

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
    import numpy as np

    from ai_edge_litert.interpreter import Interpreter

    from demo.engine import canonical_input_shape
    from demo.runtimes import CarriedGraphs, run_interpreter, usable_cores

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
    import numpy as np

    from demo.engine import canonical_input_shape
    from demo.runtimes import CarriedOnnxGraph

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


def hide_token(text: str, token: str | None = None) -> str:
    """`text` with the Hub token (default: the user's own) masked, should a server ever echo it back
    in an error. Such a message is logged, and shown on the page as the fallback notice, to anyone."""
    if token is None:
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
