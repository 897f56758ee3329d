"""What every trainer of the pipeline shares (ICD, DeepLab, the ResNet101 stand-in): labels as multi-hot
vectors, the classification loss and monitor, the official poly schedule, the divergence error.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from wsss.core.errors import ICDError
from wsss.data.classes import NUM_FOREGROUND


class TrainingDiverged(ICDError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def multi_hot(classes: list[int]) -> np.ndarray:
    """VOC class indices 1..20 -> a 20-dim float vector (background is not a label)."""
    vector = np.zeros(NUM_FOREGROUND, np.float32)
    vector[np.asarray(classes, dtype=np.int64) - 1] = 1.0
    return vector


def poly_lr(base_lr: float, epoch: int, epochs: int, power: float) -> float:
    """The official per-epoch poly schedule: lr * (1 - epoch / epochs) ** power."""
    return base_lr * (1.0 - epoch / epochs) ** power


def rank_accuracy(class_logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Official monitor: a present class counts as correct if it ranks within the top |labels| scores."""
    order = class_logits.argsort(dim=1, descending=True)
    counts = labels.sum(dim=1).long()
    correct = sum(int(labels[i, order[i, : counts[i]]].sum()) for i in range(len(labels)))
    return correct, int(counts.sum())


def cam_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label sigmoid BCE summed over classes, averaged over images (`MultiSigmoidLoss`)."""
    bce = F.binary_cross_entropy_with_logits(class_logits, labels.to(class_logits.dtype), reduction="none")
    return bce.sum(1).mean()
