"""The model bundle's contract: what a bundle folder holds and what its config.json says (docs/bundle.md).

A bundle is a folder with `model.keras`, `config.json` (which carries the SHA-256 of model.keras),
a model card (`README.md`) and plots, and usually the serving graphs converted from model.keras
(`serving_graphs` in config.json). `BundleConfig` is config.json, typed: `training.bundle` (the one
writer of a bundle) builds it, and every reader gets it from `demo.bundle_files.read_config`.
This module holds the types and names alone; reading and verifying the files is
`demo.bundle_files`, loading the graphs `demo.graphs`, the Hub `demo.hub`, and choosing what the
app serves `demo.loading`.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
CARD_FILE = "README.md"
SCHEMA_VERSION = 1
REQUIRED_CONFIG_KEYS = ("schema_version", "architecture", "input_size", "resize", "stride",
                        "target_class", "threshold", "model_sha256")
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
    """config.json, typed: `training.bundle` writes it and every reader gets one (`demo.bundle_files.read_config`).

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
    threshold: float  # the default threshold: the class where the probability reaches it
    test_time_flip: bool = False  # average each photo's answer with its mirror image's
    dataset: DatasetInfo = field(default_factory=DatasetInfo)
    parameters: int | None = None
    gflops_per_image: float | None = None
    training: dict = field(default_factory=dict)  # the training arguments and what the run measured
    versions: dict = field(default_factory=dict)
    created: str | None = None
    model_sha256: str = ""  # of model.keras; `training.bundle.BundleDraft.save_model` fills it in
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


def is_onnx_graph(name: str) -> bool:
    return name.endswith(ONNX_SUFFIX)


def onnx_graph_weights(config: BundleConfig) -> str | None:
    """How the carried ONNX graph computes, as its record says: "float16" (float16 weights, float32
    arithmetic) or "int8" (int8 weights and uint8 activations); None for a bundle without one."""
    files = (config.serving_graphs or {}).get("files", {})
    return next((entry.get("weights", "float16") for name, entry in files.items() if is_onnx_graph(name)), None)

