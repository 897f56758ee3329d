"""Segmentation quality of DeepLab predictions with the shared confusion matrix (`wsss.metrics`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss.core.errors import DataError
from wsss.data.classes import ClassList
from wsss.evaluation import folder_confusion
from wsss.metrics import class_iou, mean_iou

# The folders deeplab.infer.predict_split writes. Kept here: this module imports neither torch nor the CRF, so the
# evaluation jobs start in a fraction of a second instead of the 2 s of CPU that importing torch costs.
POSTPROCESSING = ("raw", "crf")


def evaluate_predictions(dataset: dict, predictions_dir, *, progress: bool = True) -> dict:
    """mIoU and per-class IoU of each post-processing folder (`raw/`, `crf/`) against the eval split's GT.

    Returns {post-processing: {"miou": float, "per_class": {class name: IoU or None if absent}}}.
    """
    split = dataset["roles"]["eval"]
    results = {}
    for name in POSTPROCESSING:
        folder = Path(predictions_dir) / name
        if not folder.is_dir():
            continue
        confusion = folder_confusion(
            dataset,
            split,
            folder,
            kind="prediction",
            fix="Rerun `deeplab predict-deeplab` for this split: predictions are at full resolution.",
            progress=progress,
        )
        ious = class_iou(confusion)
        names = ClassList.of_dataset(dataset).names
        results[name] = {
            "miou": mean_iou(confusion),
            "per_class": {cls: (None if np.isnan(iou) else float(iou)) for cls, iou in zip(names, ious, strict=True)},
        }
    if not results:
        raise DataError(
            f"{predictions_dir}: holds neither raw/ nor crf/ predictions. Run `deeplab predict-deeplab` first."
        )
    return results
