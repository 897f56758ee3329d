"""Seed quality as the paper evaluates it (Tables 2 and 3) on the weakly-labelled training split.

`miou` excludes the pixels a seed leaves at 255 (the official evaluation), `miou_strict` counts
them as wrong, `recall` is the fraction of valid pixels a seed labels (Table 2's recall) and
`precision` the fraction of labelled pixels that are right.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from icd.score_maps import scored_training_images
from icd.seeds import cam_seed, icd_seed
from wsss.core.shards import ShardStore
from wsss.data.classes import ClassList
from wsss.evaluation import folder_confusion
from wsss.metrics import class_iou, confusion_matrix, coverage, mean_iou, pixel_accuracy


def quality_row(confusion: np.ndarray, **labels) -> dict:
    """One table row: the given labels plus the four quality figures."""
    return {
        **labels,
        "miou": mean_iou(confusion),
        "miou_strict": mean_iou(confusion, strict=True),
        "recall": coverage(confusion),
        "precision": pixel_accuracy(confusion),
    }


CAM_SWEEP = "cam sweep"  # the `table` value of the background-threshold sweep's rows (seed_thresholds.csv only)


def threshold_sweep(
    dataset: dict,
    score_shards: list[str],
    superpixel_shards: list[str],
    *,
    canvas: int,
    thresholds: list[float],
    cam_backgrounds: list[float],
    progress: bool = True,
) -> tuple[list[dict], dict[str, float]]:
    """Table 2 (CAM and adapted ICD seeds at thresholds T and -T) and the CAM baselines' background sweeps.

    The `cam` baseline and its superpixel-averaged twin `cam_sp` (icd.seeds.cam_seed) each get the
    background threshold that gives it the best mIoU against the ground truth: the field's practice
    for CAM seeds, and a choice ICD's own seeds (T = 0, no sweep) never get. Returns the rows and
    {"cam": best, "cam_sp": best}.
    """
    confusions: dict[tuple, np.ndarray] = {}
    num_classes = ClassList.of_dataset(dataset).num_classes

    def add(key, gt, seed):
        confusions[key] = confusions.get(key, 0) + confusion_matrix(gt, seed, num_classes)

    regions = ShardStore(superpixel_shards)
    images = scored_training_images(
        dataset, score_shards, canvas=canvas, description="threshold sweep", progress=progress
    )
    for image_id, gt, (cam, _, _, adapted), classes in images:
        for threshold in thresholds:
            add((2, "cam", threshold), gt, icd_seed(cam, classes, cam, threshold=threshold))
            if np.isfinite(adapted).all():
                add((2, "icd", threshold), gt, icd_seed(adapted, classes, cam, threshold=threshold))
        superpixels = regions[image_id]
        for background in cam_backgrounds:
            add((CAM_SWEEP, "cam", background), gt, cam_seed(cam, classes, background_threshold=background))
            add(
                (CAM_SWEEP, "cam_sp", background),
                gt,
                cam_seed(cam, classes, background_threshold=background, superpixels=superpixels),
            )
    rows = [
        quality_row(confusion, table=table, variant=variant, threshold=value)
        for (table, variant, value), confusion in confusions.items()
    ]
    best = {
        variant: float(
            max(
                (row for row in rows if row["table"] == CAM_SWEEP and row["variant"] == variant),
                key=lambda row: row["miou"],
            )["threshold"]
        )
        for variant in ("cam", "cam_sp")
    }
    return rows, best


def evaluate_seed_folders(
    dataset: dict, seeds_root, thresholds: dict[str, float], progress: bool = True
) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Table 3 rows (one per seed folder) and per-class IoU of every folder, against the split's GT."""
    split = dataset["roles"]["train"]
    names = ClassList.of_dataset(dataset).names
    rows, per_class = [], {}
    for variant, threshold in thresholds.items():
        confusion = folder_confusion(
            dataset,
            split,
            Path(seeds_root) / variant,
            kind="seed",
            fix="The folder belongs to another dataset or run: regenerate the seeds.",
            progress=progress,
        )
        rows.append(quality_row(confusion, table=3, variant=variant, threshold=threshold))
        per_class[variant] = {
            name: float(iou) for name, iou in zip(names, class_iou(confusion), strict=True) if not np.isnan(iou)
        }
    return rows, per_class
