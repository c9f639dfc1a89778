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


@keras.saving.register_keras_serializable(package="carseg")
class BceLovaszLoss(keras.losses.Loss):
    """Binary cross-entropy plus the Lovasz hinge (Berman et al., CVPR 2018), per image.

    The Lovasz hinge is the tight convex extension of the image's Jaccard loss (1 - IoU), applied to
    the pixels' hinge errors: sorted worst first, each is weighted by what it adds to the Jaccard loss.
    It needs logits; the model ends in a sigmoid, so they are recovered from its clipped probabilities.
    An image without cars is charged for its most confident false positive. The union in the weights
    is never zero (cars, or else every pixel, count in it), and training crops need no padding
    weights (see DiceLoss).
    """

    def __init__(self, name: str = "bce_lovasz", **kwargs):
        super().__init__(name=name, **kwargs)
        self.bce = keras.losses.BinaryCrossentropy(reduction=None)

    def call(self, y_true, y_pred):
        bce = ops.mean(self.bce(y_true, y_pred), axis=(1, 2))
        return bce + lovasz_hinge_per_image(y_true, y_pred)


def lovasz_hinge_per_image(y_true, y_pred):
    """The Lovasz hinge of each image of a (B, H, W, 1) batch of car probabilities: shape (B,)."""
    batch = ops.shape(y_pred)[0]
    truth = ops.reshape(ops.cast(y_true, y_pred.dtype), (batch, -1))
    epsilon = keras.config.epsilon()
    probabilities = ops.clip(ops.reshape(y_pred, (batch, -1)), epsilon, 1.0 - epsilon)
    logits = ops.log(probabilities) - ops.log1p(-probabilities)
    errors = 1.0 - logits * (2.0 * truth - 1.0)
    order = ops.flip(ops.argsort(errors, axis=-1), axis=-1)  # worst first
    errors_sorted = ops.take_along_axis(errors, order, axis=-1)
    truth_sorted = ops.take_along_axis(truth, order, axis=-1)
    # The Jaccard loss of the k worst pixels taken as mistakes, for every k; its increments weight them.
    positives = ops.sum(truth_sorted, axis=-1, keepdims=True)
    intersection = positives - ops.cumsum(truth_sorted, axis=-1)
    union = positives + ops.cumsum(1.0 - truth_sorted, axis=-1)
    jaccard = 1.0 - intersection / union
    weights = ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)
    return ops.sum(ops.relu(errors_sorted) * ops.stop_gradient(weights), axis=-1)


@keras.saving.register_keras_serializable(package="carseg")
class WithClassAuxiliary(keras.losses.Loss):
    """The car loss plus `weight` times the pixel cross-entropy of an auxiliary head over every CamVid class.

    For a training model whose output is the car probability followed by the class probabilities
    (`training.models.with_class_head`), against targets of car mask, class id and pixel weight
    (`training.data.make_dataset(..., class_ids=True)`). Naming what the other pixels are (sign, building,
    pedestrian) is supervision the car mask alone does not give. Pixels labelled `ignore_class`
    (unlabelled) or of weight 0 (padding) do not count in the cross-entropy.
    """

    def __init__(self, car_loss: str = "bce+dice", weight: float = 0.5, ignore_class: int = 11,
                 name: str = "with_class_auxiliary", **kwargs):
        super().__init__(name=name, **kwargs)
        self.car_loss, self.weight, self.ignore_class = car_loss, weight, ignore_class
        self.car = make_loss(car_loss)
        self.car.reduction = None

    def call(self, y_true, y_pred):
        car = self.car(y_true[..., :1], y_pred[..., :1])
        labels = ops.cast(y_true[..., 1], "int32")
        counted = ops.cast(labels != self.ignore_class, y_pred.dtype) * ops.cast(y_true[..., 2], y_pred.dtype)
        probabilities = ops.clip(y_pred[..., 1:], keras.config.epsilon(), 1.0)
        picked = ops.take_along_axis(probabilities, ops.expand_dims(ops.minimum(labels, self.ignore_class), -1), -1)
        cross_entropy = -ops.log(picked[..., 0]) * counted
        per_image = ops.sum(cross_entropy, axis=(1, 2)) / ops.maximum(ops.sum(counted, axis=(1, 2)), 1.0)
        if len(car.shape) > 1:  # a per-pixel car loss (plain BCE): one figure per image, as the others give
            car = ops.mean(car, axis=tuple(range(1, len(car.shape))))
        return car + self.weight * per_image

    def get_config(self):
        return {**super().get_config(), "car_loss": self.car_loss, "weight": self.weight,
                "ignore_class": self.ignore_class}


# --loss's choices: each name and what makes that loss.
LOSSES: dict[str, Callable[[], keras.losses.Loss]] = {
    "bce": lambda: keras.losses.BinaryCrossentropy(name="bce"),
    "dice": DiceLoss,
    "bce+dice": BceDiceLoss,
    "bce+lovasz": BceLovaszLoss,
}


def make_loss(name: str) -> keras.losses.Loss:
    if name not in LOSSES:
        raise ValueError(f"Unknown loss '{name}'; choose from {', '.join(LOSSES)}.")
    return LOSSES[name]()


def training_metrics(threshold: float = 0.5) -> list:
    """Keras metrics that accumulate pixel counts over an epoch (padding weighted out), of the car: the
    first channel of targets and outputs, which with a class head (`WithClassAuxiliary`) carry more."""
    return [
        CarIoU(target_class_ids=[1], threshold=threshold, name="iou"),
        CarPrecision(thresholds=threshold, name="precision"),
        CarRecall(thresholds=threshold, name="recall"),
    ]


def _on_the_car_channel(metric_class):
    """`metric_class`, updated from the first channel of targets and outputs only."""

    class OnTheCarChannel(metric_class):
        def update_state(self, y_true, y_pred, sample_weight=None):
            if sample_weight is not None:
                # The weights here are 0/1 padding masks: exact in the metric's own dtype (BinaryIoU counts
                # in int64, and warns of a lossy cast when handed floats).
                sample_weight = keras.ops.cast(sample_weight, self.dtype)
            return super().update_state(y_true[..., :1], y_pred[..., :1], sample_weight)

    name = f"Car{metric_class.__name__.removeprefix('Binary')}"
    OnTheCarChannel.__name__ = OnTheCarChannel.__qualname__ = name
    return keras.saving.register_keras_serializable(package="carseg", name=name)(OnTheCarChannel)


CarIoU = _on_the_car_channel(keras.metrics.BinaryIoU)
CarPrecision = _on_the_car_channel(keras.metrics.Precision)
CarRecall = _on_the_car_channel(keras.metrics.Recall)


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
