"""Metrics against brute-force counts and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from wsss.data.classes import NUM_CLASSES
from wsss.metrics import PixelAveragePrecision, class_iou, confusion_matrix, coverage, mean_iou, pixel_accuracy


def brute_force_iou(gt: np.ndarray, pred: np.ndarray, num_classes: int, strict: bool) -> np.ndarray:
    ious = []
    for c in range(num_classes):
        valid = gt != 255
        if not strict:
            valid &= pred != 255
        tp = np.sum((gt == c) & (pred == c) & valid)
        fp = np.sum((gt != c) & (pred == c) & valid)
        fn = np.sum((gt == c) & (pred != c) & valid)
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else np.nan)
    return np.array(ious)


@pytest.mark.parametrize("seed", range(4))
def test_iou_matches_brute_force_counts(seed):
    rng = np.random.default_rng(seed)
    gt = rng.choice([0, 1, 2, 5, 255], size=(40, 30), p=[0.4, 0.2, 0.2, 0.1, 0.1]).astype(np.uint8)
    pred = rng.choice([0, 1, 2, 7, 255], size=(40, 30)).astype(np.uint8)
    confusion = confusion_matrix(gt, pred, NUM_CLASSES)
    for strict in (False, True):
        np.testing.assert_allclose(class_iou(confusion, strict=strict), brute_force_iou(gt, pred, 21, strict))
        assert mean_iou(confusion, strict=strict) == pytest.approx(np.nanmean(brute_force_iou(gt, pred, 21, strict)))
    valid = gt != 255
    assert coverage(confusion) == pytest.approx(np.mean(pred[valid] != 255))
    labelled = valid & (pred != 255)
    assert pixel_accuracy(confusion) == pytest.approx(np.mean(gt[labelled] == pred[labelled]))


def test_strict_iou_is_never_higher():
    gt = np.array([[1, 1, 0, 0]], np.uint8)
    pred = np.array([[1, 255, 0, 255]], np.uint8)
    confusion = confusion_matrix(gt, pred, NUM_CLASSES)
    assert mean_iou(confusion) == 1.0 and mean_iou(confusion, strict=True) == 0.5


@pytest.mark.parametrize("seed", range(5))
def test_pixel_ap_equals_sklearn_on_float16_scores(seed):
    rng = np.random.default_rng(seed)
    metric = PixelAveragePrecision(3)
    scores, labels = [], []
    for _ in range(4):  # images of class 1, with ties and ignored pixels
        score = np.round(rng.normal(size=(20, 25)), 1).astype(np.float16)
        fg = rng.random((20, 25)) < 0.3 + 0.2 * (score > 0)
        valid = rng.random((20, 25)) > 0.1
        metric.add(1, score, fg, valid)
        scores.append(score[valid].astype(np.float64))
        labels.append(fg[valid])
    expected = average_precision_score(np.concatenate(labels), np.concatenate(scores))
    result = metric.per_class()
    assert result[1] == pytest.approx(expected, rel=1e-12)
    assert np.isnan(result[0]) and np.isnan(result[2])
