"""Segmentation quality of DeepLab predictions with the shared confusion matrix (`wsss.metrics`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from deeplab.infer import POSTPROCESSING
from wsss.core.errors import DataError
from wsss.data.classes import NUM_CLASSES, VOC_CLASSES
from wsss.data.io import read_mask
from wsss.data.voc import VOCPaths
from wsss.metrics import class_iou, confusion_matrix, mean_iou


def evaluate_predictions(dataset: dict, predictions_dir, *, progress: bool = True) -> dict:
    """mIoU and per-class IoU of each post-processing folder (`raw/`, `crf/`) against the eval split's GT.

    Returns {post-processing: {"miou": float, "per_class": {class name: IoU or None if absent}}}.
    """
    split = dataset["roles"]["eval"]
    ids = dataset["splits"][split]
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    results = {}
    for name in POSTPROCESSING:
        folder = Path(predictions_dir) / name
        if not folder.is_dir():
            continue
        missing = [image_id for image_id in ids if not (folder / f"{image_id}.png").is_file()]
        if missing:
            raise DataError(
                f"{folder}: no prediction for {len(missing)} of the {len(ids)} '{split}' ids "
                f"(first: {missing[0]}). Rerun `deeplab predict-deeplab` for this split."
            )
        confusion = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
        for image_id in tqdm(ids, desc=f"evaluate {name}", disable=not progress, mininterval=2.0):
            ground_truth = read_mask(paths.ground_truth(split, image_id))
            prediction = read_mask(folder / f"{image_id}.png")
            if prediction.shape != ground_truth.shape:
                raise DataError(
                    f"{folder / image_id}.png: prediction is {prediction.shape} but the ground truth is "
                    f"{ground_truth.shape}. Predictions must be at full resolution: rerun predict."
                )
            confusion += confusion_matrix(ground_truth, prediction)
        ious = class_iou(confusion)
        results[name] = {
            "miou": mean_iou(confusion),
            "per_class": {
                cls: (None if np.isnan(iou) else float(iou)) for cls, iou in zip(VOC_CLASSES, ious, strict=True)
            },
        }
    if not results:
        raise DataError(
            f"{predictions_dir}: holds neither raw/ nor crf/ predictions. Run `deeplab predict-deeplab` first."
        )
    return results
