"""Recompute a bundle's BatchNorm statistics on its clean training frames ("precise BN").

    python -m training.recompute_batchnorm BUNDLE_DIR --data-dir runs/holdout-0006R0/data
    python -m training.train ... --recompute-batchnorm     # the same, as the last step of training

During training each BatchNorm layer keeps a moving average of its batch statistics (momentum
0.99: about the last 100 steps, several epochs of a short run), taken on augmented crops while the
weights still moved. The statistics the model serves with therefore belong to no single set of
weights and to no real photo; on a held-out drive the per-epoch IoU swung by up to 0.1 with the
precision/recall balance, late in training, as those averages lagged. This tool replaces them with
the exact average of the batch statistics of the final weights on the training split's frames,
un-augmented, at the training size (Wu and Johnson, "Rethinking BatchNorm", 2021, call this precise
BatchNorm). Only the layers training updated change: an EfficientNet encoder's BatchNorm layers are
frozen with ImageNet's statistics and keep them.

The bundle gets the new model.keras and fresh float graphs (its evaluation reports, measured on the
old weights, are dropped, and its figures are cleared): re-run training.export_graphs --int8 and
training.evaluate --update-bundle afterwards. The folder is replaced in one rename.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

from demo.bundle import CARD_FILE, BundleError, load_keras_model, staged_bundle, verify_bundle
from training.data import DataError, load_split
from training.holdout import sequence_of

BATCH_SIZE = 8
# What measured the old weights and no longer describes the new ones.
STALE_FILES = ("evaluation_*.json", "gallery_*.png", "threshold_sweep*.png", "*.tflite", "*.onnx")


def _all_layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers"):  # a nested model, such as the encoder
            yield from _all_layers(layer)
        else:
            yield layer


def trained_batchnorm_layers(model) -> list:
    """The BatchNorm layers training updates: those not frozen (an encoder's frozen ones are not)."""
    import keras

    return [layer for layer in _all_layers(model)
            if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable]


def _largest_stride_crop(images: np.ndarray, stride: int) -> np.ndarray:
    """Centre crop to the largest multiple of `stride` (padding would add pixels no photo has)."""
    height, width = (side // stride * stride for side in images.shape[1:3])
    top, left = (images.shape[1] - height) // 2, (images.shape[2] - width) // 2
    return images[:, top:top + height, left:left + width]


def recompute_batchnorm_statistics(model, images: np.ndarray, batch_size: int = BATCH_SIZE, stride: int = 32) -> int:
    """Set every trained BatchNorm layer's moving mean and variance to the frame-weighted average of its
    batch statistics over `images` (N, H, W, 3, RGB 0..255), the model in training mode with dropout off.
    Returns how many layers changed."""
    import keras

    layers = trained_batchnorm_layers(model)
    if not layers:
        return 0
    if len(images) == 0:
        raise DataError("no frames to recompute BatchNorm statistics on")
    images = _largest_stride_crop(images, stride)
    dropouts = [layer for layer in _all_layers(model) if isinstance(layer, keras.layers.Dropout)]
    momenta, rates = [layer.momentum for layer in layers], [layer.rate for layer in dropouts]
    try:
        for layer in dropouts:
            layer.rate = 0.0
        seen = 0
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size].astype(np.float32)
            # moving = momentum * moving + (1 - momentum) * batch: with this momentum the moving
            # statistics are the average over every frame so far (the first batch replaces them).
            for layer in layers:
                layer.momentum = seen / (seen + len(batch))
            model([batch] if isinstance(model.input, list) else batch, training=True)  # as the model was built
            seen += len(batch)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
    return len(layers)


def recompute_on_training_frames(model, data_dir: Path, input_size: tuple[int, int], target_class: int, stride: int,
                                 batch_size: int = BATCH_SIZE, limit: int | None = None) -> dict:
    """Recompute `model`'s statistics on `data_dir`'s training split at `input_size`; return the record a
    bundle keeps (config.json's training.batchnorm_statistics_recomputed)."""
    images, _, pairs = load_split(Path(data_dir), "train", input_size, target_class, limit)
    changed = recompute_batchnorm_statistics(model, images, batch_size, stride)
    return {"layers": changed, "frames": len(pairs), "size": list(input_size), "split": "train",
            "drives": sorted({sequence_of(pair.stem) for pair in pairs})}


def recompute_bundle(bundle_dir: Path, data_dir: Path, batch_size: int = BATCH_SIZE) -> dict:
    """Recompute the statistics of the bundle at `bundle_dir` on `data_dir`'s training split, and
    rewrite it (model.keras, float graphs, config.json, card) in one rename. Returns what it recorded."""
    from training.bundle import write_model_files
    from training.model_card import write_model_card

    bundle_dir = Path(bundle_dir)
    config = verify_bundle(bundle_dir)
    model = load_keras_model(bundle_dir)
    # At the size it trained at, not a feed scale chosen later (config.json keeps that in training).
    training_size = tuple(config.training.get("input_size") or config.input_size)
    record = recompute_on_training_frames(model, data_dir, training_size, config.target_class.id, config.stride,
                                          batch_size)
    if not record["layers"]:
        raise BundleError(f"{bundle_dir}'s model has no trained BatchNorm layers: nothing to recompute")
    record["from_model_sha256"] = config.model_sha256
    config.training["batchnorm_statistics_recomputed"] = record
    # The figures, and the feed scale and threshold chosen from them, described the old weights (the
    # threshold stays as a starting point until training.evaluate --update-bundle chooses again).
    config.metrics, config.threshold_selected_on = {}, None
    config.input_size, config.input_size_selected_on = training_size, None
    with staged_bundle(bundle_dir) as staging:  # put in place in one rename once it verifies
        shutil.copytree(bundle_dir, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*", *STALE_FILES))
        write_model_files(staging, model, config)
        if (staging / CARD_FILE).is_file():
            write_model_card(staging)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.recompute_batchnorm",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="bundle folder (model.keras + config.json)")
    parser.add_argument("--data-dir", type=Path, required=True,
                        help="the CamVid root the bundle was trained on: its train split is used, never val")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    args = parser.parse_args(argv)
    try:
        record = recompute_bundle(args.bundle, args.data_dir, args.batch_size)
    except (BundleError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    height, width = record["size"]
    print(f"{args.bundle}: {record['layers']} BatchNorm layers recomputed on {record['frames']} training frames "
          f"at {height}x{width} (drives {', '.join(record['drives'])}). Its figures are cleared: run "
          f"training.export_graphs --int8 if it served int8, then training.evaluate --update-bundle.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
