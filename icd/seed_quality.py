"""Seed quality as the paper evaluates it (Tables 2 and 3) on the weakly-labelled training split.

`miou` excludes the pixels a seed leaves at 255 (the official evaluation), `miou_strict` counts
them as wrong, `recall` is the fraction of valid pixels a seed labels (Table 2's recall) and
`precision` the fraction of labelled pixels that are right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from icd.data.classes import VOC_CLASSES
from icd.data.io import read_mask
from icd.data.voc import VOCPaths
from icd.errors import DataError
from icd.metrics import class_iou, confusion_matrix, coverage, mean_iou, pixel_accuracy
from icd.scores import scored_training_images
from icd.seeds import cam_seed, icd_seed


def quality_row(confusion: np.ndarray, **labels) -> dict:
    """One table row: the given labels plus the four quality figures."""
    return {**labels, "miou": mean_iou(confusion), "miou_strict": mean_iou(confusion, strict=True),
            "recall": coverage(confusion), "precision": pixel_accuracy(confusion)}


def threshold_sweep(dataset: dict, score_shards: list[str], *, canvas: int, thresholds: list[float],
                    cam_backgrounds: list[float], progress: bool = True) -> tuple[list[dict], float]:
    """Table 2 (CAM and adapted ICD seeds at thresholds T and -T) and the CAM baseline's background sweep.

    Returns the rows and the background threshold giving the CAM baseline its best mIoU.
    """
    confusions: dict[tuple[str, float], np.ndarray] = {}

    def add(key, gt, seed):
        confusions[key] = confusions.get(key, 0) + confusion_matrix(gt, seed)

    images = scored_training_images(dataset, score_shards, canvas=canvas, description="threshold sweep",
                                    progress=progress)
    for _, gt, (cam, _, _, adapted), classes in images:
        for threshold in thresholds:
            add(("cam", threshold), gt, icd_seed(cam, classes, cam, threshold=threshold))
            if np.isfinite(adapted).all():
                add(("icd", threshold), gt, icd_seed(adapted, classes, cam, threshold=threshold))
        for background in cam_backgrounds:
            add(("cam_background", background), gt, cam_seed(cam, classes, background_threshold=background))
    rows = [quality_row(confusion, table=2 if name != "cam_background" else "cam sweep", variant=name,
                        threshold=value) for (name, value), confusion in confusions.items()]
    sweep = [row for row in rows if row["variant"] == "cam_background"]
    best = max(sweep, key=lambda row: row["miou"])["threshold"]
    return rows, float(best)


def evaluate_seed_folders(dataset: dict, seeds_root, thresholds: dict[str, float],
                          progress: bool = True) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Table 3 rows (one per seed folder) and per-class IoU of every folder, against the split's GT."""
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["train"]
    ids = dataset["splits"][split]
    rows, per_class = [], {}
    for variant, threshold in thresholds.items():
        folder = Path(seeds_root) / variant
        found = {p.stem for p in folder.glob("*.png")}
        missing = sorted(set(ids) - found)
        if missing:
            raise DataError(f"{folder}: no seed for {len(missing)} of the {len(ids)} '{split}' ids (e.g. "
                            f"{missing[0]}); the folder belongs to another dataset or run. Regenerate the seeds.")
        confusion = 0
        for image_id in tqdm(ids, desc=variant, disable=not progress, mininterval=2.0):
            gt = read_mask(paths.ground_truth(split, image_id))
            seed = read_mask(folder / f"{image_id}.png")
            if seed.shape != gt.shape:
                raise DataError(f"{folder / (image_id + '.png')}: seed is {seed.shape[1]}x{seed.shape[0]} but the "
                                f"ground truth is {gt.shape[1]}x{gt.shape[0]}. Regenerate the seeds.")
            confusion = confusion + confusion_matrix(gt, seed)
        rows.append(quality_row(confusion, table=3, variant=variant, threshold=threshold))
        per_class[variant] = {name: float(iou) for name, iou in zip(VOC_CLASSES, class_iou(confusion))
                              if not np.isnan(iou)}
    return rows, per_class
