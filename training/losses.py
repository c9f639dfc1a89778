"""Losses for a binary car mask, and metrics computed from pixel counts.

Every metric here is accumulated over a whole split (true/false positives and
false negatives summed over all pixels of all images) and only then turned into
IoU, Dice, precision and recall, never averaged per batch.
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="carseg")
class DiceLoss(keras.losses.Loss):
    """1 - soft Dice over the whole batch; insensitive to how rare car pixels are."""

    def __init__(self, smooth: float = 1.0, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smooth = smooth

    def call(self, y_true, y_pred):
        # Padding weights cannot reach Loss.call; training crops are chosen so that they
        # never need padding (see data.default_crop_size), so none is needed here.
        y_true = ops.cast(y_true, y_pred.dtype)
        intersection = ops.sum(y_true * y_pred)
        total = ops.sum(y_true) + ops.sum(y_pred)
        dice = (2.0 * intersection + self.smooth) / (total + self.smooth)
        return ops.broadcast_to(1.0 - dice, ops.shape(y_pred)[:1])

    def get_config(self):
        return {**super().get_config(), "smooth": self.smooth}


@keras.saving.register_keras_serializable(package="carseg")
class BceDiceLoss(keras.losses.Loss):
    """Binary cross-entropy plus Dice: per-pixel calibration and overlap together."""

    def __init__(self, name: str = "bce_dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce = keras.losses.BinaryCrossentropy(reduction=None)
        self.dice = DiceLoss(reduction=None)

    def call(self, y_true, y_pred):
        bce = ops.mean(self.bce(y_true, y_pred), axis=(1, 2))
        return bce + self.dice(y_true, y_pred)


# --loss's choices: each name and what makes that loss.
LOSSES: dict[str, Callable[[], keras.losses.Loss]] = {
    "bce": lambda: keras.losses.BinaryCrossentropy(name="bce"),
    "dice": DiceLoss,
    "bce+dice": BceDiceLoss,
}


def make_loss(name: str) -> keras.losses.Loss:
    if name not in LOSSES:
        raise ValueError(f"Unknown loss '{name}'; choose from {', '.join(LOSSES)}.")
    return LOSSES[name]()


@keras.saving.register_keras_serializable(package="carseg")
class CarIoU(keras.metrics.BinaryIoU):
    """BinaryIoU taking its sample weights, the pipeline's 0/1 padding masks, in its own integer dtype:
    exact, and without the warning of a lossy cast BinaryIoU gives when handed them as floats."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            sample_weight = keras.ops.cast(sample_weight, self.dtype)
        return super().update_state(y_true, y_pred, sample_weight)


def training_metrics(threshold: float = 0.5) -> list:
    """Keras metrics that accumulate pixel counts over an epoch (padding weighted out)."""
    return [
        CarIoU(target_class_ids=[1], threshold=threshold, name="iou"),
        keras.metrics.Precision(thresholds=threshold, name="precision"),
        keras.metrics.Recall(thresholds=threshold, name="recall"),
    ]


def scores_from_counts(true_positives, false_positives, false_negatives) -> dict:
    """IoU, Dice, precision and recall from summed pixel counts.

    With neither car in the truth nor in the prediction, IoU and Dice are 1 (a perfect
    answer); precision and recall with an empty denominator are 0.
    """
    tp, fp, fn = (np.asarray(value, np.float64) for value in (true_positives, false_positives, false_negatives))
    union = tp + fp + fn
    empty = union == 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(empty, 1.0, tp / np.where(empty, 1, union))
        dice = np.where(empty, 1.0, 2 * tp / np.where(empty, 1, 2 * tp + fp + fn))
        precision = np.where(tp + fp == 0, 0.0, tp / np.where(tp + fp == 0, 1, tp + fp))
        recall = np.where(tp + fn == 0, 0.0, tp / np.where(tp + fn == 0, 1, tp + fn))
    return {"iou": iou, "dice": dice, "precision": precision, "recall": recall}


def pixel_counts(truth: np.ndarray, probabilities: np.ndarray, thresholds: np.ndarray):
    """(tp, fp, fn) arrays, one entry per threshold, for one image."""
    truth = truth.astype(bool).ravel()
    # Sorting once makes the counts at every threshold a binary search.
    order = np.argsort(probabilities.ravel())
    sorted_probabilities = probabilities.ravel()[order]
    positives_at_or_above = np.cumsum(truth[order][::-1])[::-1]  # car pixels with prob >= sorted[i]
    first = np.searchsorted(sorted_probabilities, thresholds, side="left")
    n = truth.size
    predicted = n - first
    total_truth = int(truth.sum())
    tp = np.where(first < n, positives_at_or_above[np.minimum(first, n - 1)], 0)
    return tp, predicted - tp, total_truth - tp
