"""Losses and metrics on hand-made cases with known answers."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from training.losses import (
    DiceLoss,
    make_loss,
    pixel_counts,
    scores_from_counts,
    training_metrics,
)


def test_scores_from_known_counts():
    # Truth: 6 car pixels. Prediction: 4 of them plus 2 wrong ones. IoU = 4 / (4 + 2 + 2).
    truth = np.zeros((4, 4), np.uint8)
    truth[0, :3] = truth[1, :3] = 1
    prediction = np.zeros((4, 4), np.float32)
    prediction[0, :2] = prediction[1, :2] = 0.9
    prediction[3, :2] = 0.8
    tp, fp, fn = pixel_counts(truth, prediction, np.array([0.5]))
    assert (tp[0], fp[0], fn[0]) == (4, 2, 2)
    scores = scores_from_counts(tp, fp, fn)
    assert scores["iou"][0] == pytest.approx(0.5)
    assert scores["dice"][0] == pytest.approx(2 * 4 / (2 * 4 + 2 + 2))
    assert scores["precision"][0] == pytest.approx(4 / 6)
    assert scores["recall"][0] == pytest.approx(4 / 6)


def test_pixel_counts_match_direct_counting_at_every_threshold():
    rng = np.random.default_rng(1)
    truth = rng.random((37, 53)) > 0.7
    probabilities = rng.random((37, 53)).astype(np.float32)
    probabilities[:3] = 0.5  # ties exactly at a threshold
    thresholds = np.array([0.0, 0.05, 0.5, 0.95, 1.0])
    tp, fp, fn = pixel_counts(truth, probabilities, thresholds)
    for index, threshold in enumerate(thresholds):
        predicted = probabilities >= threshold
        assert tp[index] == np.count_nonzero(predicted & truth)
        assert fp[index] == np.count_nonzero(predicted & ~truth)
        assert fn[index] == np.count_nonzero(~predicted & truth)


def test_empty_truth_and_prediction_is_perfect():
    scores = scores_from_counts([0], [0], [0])
    assert scores["iou"][0] == 1.0 and scores["dice"][0] == 1.0


def test_keras_iou_accumulates_counts_over_batches_not_averages():
    """Batch 1: IoU 1/1. Batch 2: IoU 1/4. Pooled counts give 2/5, a batch mean would give 0.625."""
    iou = training_metrics()[0]  # images of one row, one channel: (batch, 1, width, 1)
    iou.update_state(np.array([[[[1.0]]]]), np.array([[[[0.9]]]]))
    iou.update_state(np.array([[1.0, 1.0, 0.0, 0.0]])[..., None, :, None],
                     np.array([[0.9, 0.1, 0.9, 0.9]])[..., None, :, None])
    assert float(iou.result()) == pytest.approx(2 / 5)


@pytest.mark.filterwarnings("error")  # and without a warning of a lossy weight cast
def test_keras_metrics_ignore_zero_weight_padding():
    iou = training_metrics()[0]
    truth, prediction = np.array([[[[1.0], [0.0]]]]), np.array([[[[0.9], [0.9]]]])
    iou.update_state(truth, prediction, sample_weight=np.array([[[[1.0], [0.0]]]]))
    assert float(iou.result()) == pytest.approx(1.0)


def test_dice_loss_known_values():
    truth = np.array([[[[1.0], [1.0], [0.0], [0.0]]]])
    assert float(DiceLoss(smooth=0.0)(truth, truth)) == pytest.approx(0.0)
    assert float(DiceLoss(smooth=0.0)(truth, 1.0 - truth)) == pytest.approx(1.0)
    half = np.full_like(truth, 0.5)
    assert float(DiceLoss(smooth=0.0)(truth, half)) == pytest.approx(1 - 2 * 1.0 / (2 + 2))


def test_bce_plus_dice_is_their_sum():
    rng = np.random.default_rng(2)
    truth = (rng.random((2, 8, 8, 1)) > 0.5).astype(np.float32)
    prediction = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype(np.float32)
    bce = float(keras.losses.BinaryCrossentropy()(truth, prediction))
    # The batch-wide Dice loss is the same for every sample, so its mean is itself.
    dice = float(DiceLoss()(truth, prediction))
    assert float(make_loss("bce+dice")(truth, prediction)) == pytest.approx(bce + dice, rel=1e-4)


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown loss 'focal'"):
        make_loss("focal")
