"""Label maps on disk against the ground truth: the one loop the seed tables and DeepLab's evaluation share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.core.errors import DataError
from wsss.data.classes import ClassList
from wsss.data.io import read_mask
from wsss.data.voc import VOCPaths
from wsss.metrics import confusion_matrix


def folder_confusion(dataset: dict, split: str, folder, *, kind: str, fix: str, progress: bool = True) -> np.ndarray:
    """The confusion matrix (wsss.metrics.confusion_matrix) of folder/<id>.png over every id of `split`.

    Checked before anything is counted: an id without its PNG (the folder belongs to another dataset or run)
    or a PNG of another size than its ground truth fails, naming the folder or file, what it is (`kind`:
    "seed", "prediction") and the `fix`.
    """
    folder = Path(folder)
    ids = dataset["splits"][split]
    missing = [image_id for image_id in ids if not (folder / f"{image_id}.png").is_file()]
    if missing:
        raise DataError(
            f"{folder}: no {kind} for {len(missing)} of the {len(ids)} '{split}' ids (first: {missing[0]}). {fix}"
        )
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    num_classes = ClassList.of_dataset(dataset).num_classes
    confusion = 0
    for image_id in tqdm(ids, desc=f"{kind}s {folder.name}", disable=not progress, mininterval=2.0):
        ground_truth = read_mask(paths.ground_truth(split, image_id), num_classes)
        labels = read_mask(folder / f"{image_id}.png", num_classes)
        if labels.shape != ground_truth.shape:
            raise DataError(
                f"{folder / image_id}.png: {kind} is {labels.shape[1]}x{labels.shape[0]} but the ground truth is "
                f"{ground_truth.shape[1]}x{ground_truth.shape[0]}. {fix}"
            )
        confusion = confusion + confusion_matrix(ground_truth, labels, num_classes)
    return confusion
