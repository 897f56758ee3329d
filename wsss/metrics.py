"""Segmentation metrics shared by the seed and DeepLab stages: confusion matrix, IoU, pixel AP.

One implementation of each, so the seed tables (Tables 1-3) and the segmentation tables (7/8)
measure the same way.
"""

from __future__ import annotations

import numpy as np

from wsss.data.classes import IGNORE_LABEL


def confusion_matrix(ground_truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes) x (num_classes + 1) counts: rows GT class (background included), columns predicted class or
    'left at 255' (the last column).

    GT pixels at 255 are skipped; predictions at 255 land in the last column.
    """
    ground_truth = np.asarray(ground_truth).ravel()
    prediction = np.asarray(prediction).ravel()
    if ground_truth.shape != prediction.shape:
        raise ValueError(f"ground truth and prediction differ in size: {ground_truth.size} vs {prediction.size}")
    valid = ground_truth != IGNORE_LABEL
    gt = ground_truth[valid].astype(np.int64)
    pred = prediction[valid].astype(np.int64)
    pred = np.where(pred == IGNORE_LABEL, num_classes, pred)
    if gt.size and (gt.max() >= num_classes or pred.max() > num_classes):
        raise ValueError("labels outside the class range")
    return np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1)).reshape(
        num_classes, num_classes + 1
    )


def class_iou(confusion: np.ndarray, *, strict: bool = False) -> np.ndarray:
    """Per-class IoU; NaN for classes absent from both GT and prediction.

    Default: pixels the prediction left at 255 are excluded (the official seed evaluation).
    strict: they count as wrong (a false negative of their GT class).
    """
    labelled = confusion[:, :-1].astype(np.float64)
    true_positive = np.diag(labelled)
    gt_total = (confusion if strict else labelled).sum(axis=1)
    union = gt_total + labelled.sum(axis=0) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, true_positive / union, np.nan)


def mean_iou(confusion: np.ndarray, *, strict: bool = False) -> float:
    """Mean IoU over the classes present in GT or prediction."""
    return float(np.nanmean(class_iou(confusion, strict=strict)))


def coverage(confusion: np.ndarray) -> float:
    """Fraction of valid GT pixels that received a label (not 255): Table 2's recall of a seed."""
    total = confusion.sum()
    return float(confusion[:, :-1].sum() / total) if total else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Fraction of the labelled pixels that are correct: the precision of a seed."""
    labelled = confusion[:, :-1]
    total = labelled.sum()
    return float(np.trace(labelled) / total) if total else float("nan")


def _float16_order_keys(scores: np.ndarray) -> np.ndarray:
    """Map float16 scores to uint16 keys whose integer order is the float order (NaN-free input)."""
    canonical = np.asarray(scores, dtype=np.float16) + np.float16(0)  # -0.0 + 0.0 = +0.0: one key for zero
    bits = canonical.view(np.uint16).astype(np.int64)
    return np.where(bits & 0x8000, 0xFFFF - bits, bits | 0x8000)


class PixelAveragePrecision:
    """Table 1's pixel-level AP: per class, rank every pixel of the images holding the class by its score.

    Scores are counted per distinct float16 value (65,536 bins per class), so a VOC-scale evaluation
    streams image by image in constant memory and is exact for float16 scores. AP sums precision over
    every distinct recall value, tied scores forming one step (as sklearn's average_precision_score).
    """

    BINS = 1 << 16

    def __init__(self, num_classes: int) -> None:
        self.positives = np.zeros((num_classes, self.BINS), np.int64)
        self.negatives = np.zeros((num_classes, self.BINS), np.int64)

    def add(
        self, class_index: int, scores: np.ndarray, is_foreground: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        """Add one image's pixels for a class present in it (`valid` masks out ignored pixels)."""
        keys = _float16_order_keys(scores).ravel()
        foreground = np.asarray(is_foreground, bool).ravel()
        if valid is not None:
            keep = np.asarray(valid, bool).ravel()
            keys, foreground = keys[keep], foreground[keep]
        self.positives[class_index] += np.bincount(keys[foreground], minlength=self.BINS)
        self.negatives[class_index] += np.bincount(keys[~foreground], minlength=self.BINS)

    def per_class(self) -> np.ndarray:
        """AP per class (NaN where a class never had a positive pixel)."""
        result = np.full(len(self.positives), np.nan)
        for index, (pos, neg) in enumerate(zip(self.positives, self.negatives, strict=True)):
            if pos.sum() == 0:
                continue
            true_positive = np.cumsum(pos[::-1])
            predicted = true_positive + np.cumsum(neg[::-1])
            step = pos[::-1] > 0  # recall changes only at bins holding positives
            result[index] = float(np.sum(pos[::-1][step] / pos.sum() * true_positive[step] / predicted[step]))
        return result
