"""How much of a class's spurious context its seeds label as the class: what W-OoD's out-of-distribution images are
meant to reduce (water labelled `boat`, rails labelled `train`).

Measured where the context is known: the synthetic generator writes, for every labelled image, which pixels carry
which class's context cue (`ContextMasks/<id>.png`, wsss.data.synthetic, 0 on objects). For a class c, its context
pixels are those of c's cue in the training images that hold c (a cue painted without its class cannot be labelled
c: seeds only use an image's own classes); the leakage is the fraction of them a seed set labels c. Pixels a seed
leaves unlabelled (255) are not leaked. The ground truth (`gt`) leaks nothing by construction: its row checks the
masks.

Beside the leakage, what removing it is worth: each row's IoU (the class's; mIoU on the `all` row, as the seed table
measures it: pixels left at 255 excluded) over the whole training split, as labelled and with every leaked context
pixel given to the background. The gap is what removing the leakage alone adds to that seed set: the headroom of a
method that acts on context leakage (W-OoD's purpose); the rest of the error lies elsewhere (objects spilling onto
plain background, boundaries).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.core.errors import DataError
from wsss.data.classes import ClassList
from wsss.data.io import read_mask
from wsss.data.voc import VOCPaths
from wsss.metrics import class_iou, confusion_matrix, mean_iou

CONTEXT_MASKS = "ContextMasks"  # wsss.data.synthetic.CONTEXT_MASKS: the folder beside JPEGImages
GROUND_TRUTH = "gt"


def context_leakage(dataset: dict, seeds_root, variants: list[str], progress: bool = True) -> list[dict]:
    """Rows {variant, class, context_pixels, leaked_pixels, leakage, iou, iou_leakage_removed} per seed set (and
    `gt`) and class with context, then the class `all` pooling the pixels of every class (its IoUs: the mIoU)."""
    masks = Path(dataset["voc_root"]) / CONTEXT_MASKS
    if not masks.is_dir():
        raise DataError(
            f"{masks}: no context masks. Only the synthetic generator writes them; the leakage table is made for "
            "synthetic data only."
        )
    split = dataset["roles"]["train"]
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    classes = ClassList.of_dataset(dataset)
    n = classes.num_classes
    sources = {variant: Path(seeds_root) / variant for variant in variants}
    names = [*variants, GROUND_TRUTH]
    context = np.zeros(n, np.int64)
    leaked = {name: np.zeros(n, np.int64) for name in names}
    # confusion against the ground truth as labelled, and with the leaked context pixels given to the background
    as_labelled = {name: np.zeros((n, n + 1), np.int64) for name in names}
    leakage_removed = {name: np.zeros((n, n + 1), np.int64) for name in names}
    for image_id in tqdm(dataset["splits"][split], desc="context leakage", disable=not progress, mininterval=2.0):
        cues = read_mask(masks / f"{image_id}.png", n)
        ground_truth = read_mask(paths.ground_truth(split, image_id), n)
        labelled = {name: read_mask(folder / f"{image_id}.png", n) for name, folder in sources.items()}
        labelled[GROUND_TRUTH] = ground_truth
        regions = {c: cues == c for c in dataset["labels"][image_id]}
        regions = {c: region for c, region in regions.items() if region.any()}
        for name, labels in labelled.items():
            confusion = confusion_matrix(ground_truth, labels, n)
            as_labelled[name] += confusion
            leaks = [region & (labels == c) for c, region in regions.items()]
            for c, leak in zip(regions, leaks, strict=True):
                leaked[name][c] += leak.sum()
            if any(leak.any() for leak in leaks):  # else giving the leaked pixels to the background changes nothing
                confusion = confusion_matrix(ground_truth, np.where(np.logical_or.reduce(leaks), 0, labels), n)
            leakage_removed[name] += confusion
        for c, region in regions.items():
            context[c] += region.sum()
    rows = []
    for name in names:
        iou, iou_removed = class_iou(as_labelled[name]), class_iou(leakage_removed[name])
        for c in np.flatnonzero(context):
            rows.append(_row(name, classes.names[c], context[c], leaked[name][c], iou[c], iou_removed[c]))
        miou = (mean_iou(as_labelled[name]), mean_iou(leakage_removed[name]))
        rows.append(_row(name, "all", context.sum(), leaked[name].sum(), *miou))
    return rows


def _row(variant: str, name: str, context: int, leaked: int, iou: float, iou_removed: float) -> dict:
    return {
        "variant": variant,
        "class": name,
        "context_pixels": int(context),
        "leaked_pixels": int(leaked),
        "leakage": leaked / context if context else float("nan"),
        "iou": float(iou),
        "iou_leakage_removed": float(iou_removed),
    }
