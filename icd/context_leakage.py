"""How much of a class's spurious context its seeds label as the class: what W-OoD's out-of-distribution images are
meant to reduce (water labelled `boat`, rails labelled `train`).

Measured where the context is known: the synthetic generator writes, for every labelled image, which pixels carry
which class's context cue (`ContextMasks/<id>.png`, wsss.data.synthetic, 0 on objects). For a class c, its context
pixels are those of c's cue in the training images that hold c (a cue painted without its class cannot be labelled
c: seeds only use an image's own classes); the leakage is the fraction of them a seed set labels c. Pixels a seed
leaves unlabelled (255) are not leaked. The ground truth (`gt`) leaks nothing by construction: its row checks the
masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.core.errors import DataError
from wsss.data.classes import ClassList
from wsss.data.io import read_mask
from wsss.data.voc import VOCPaths

CONTEXT_MASKS = "ContextMasks"  # wsss.data.synthetic.CONTEXT_MASKS: the folder beside JPEGImages
GROUND_TRUTH = "gt"


def context_leakage(dataset: dict, seeds_root, variants: list[str], progress: bool = True) -> list[dict]:
    """Rows {variant, class, context_pixels, leaked_pixels, leakage} per seed set (and `gt`) and class with context,
    then the class `all` pooling the pixels of every class."""
    masks = Path(dataset["voc_root"]) / CONTEXT_MASKS
    if not masks.is_dir():
        raise DataError(
            f"{masks}: no context masks. Only the synthetic generator writes them; the leakage table is made for "
            "synthetic data only."
        )
    split = dataset["roles"]["train"]
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    classes = ClassList.of_dataset(dataset)
    sources = {variant: Path(seeds_root) / variant for variant in variants}
    context = np.zeros(classes.num_classes, np.int64)
    leaked = {name: np.zeros(classes.num_classes, np.int64) for name in [*variants, GROUND_TRUTH]}
    for image_id in tqdm(dataset["splits"][split], desc="context leakage", disable=not progress, mininterval=2.0):
        cues = read_mask(masks / f"{image_id}.png", classes.num_classes)
        regions = {c: cues == c for c in dataset["labels"][image_id]}
        regions = {c: region for c, region in regions.items() if region.any()}
        if not regions:
            continue
        labelled = {
            name: read_mask(folder / f"{image_id}.png", classes.num_classes) for name, folder in sources.items()
        }
        labelled[GROUND_TRUTH] = read_mask(paths.ground_truth(split, image_id), classes.num_classes)
        for c, region in regions.items():
            context[c] += region.sum()
            for name, labels in labelled.items():
                leaked[name][c] += (labels[region] == c).sum()
    rows = []
    for name, counts in leaked.items():
        for c in np.flatnonzero(context):
            rows.append(_row(name, classes.names[c], context[c], counts[c]))
        rows.append(_row(name, "all", context.sum(), counts.sum()))
    return rows


def _row(variant: str, name: str, context: int, leaked: int) -> dict:
    return {
        "variant": variant,
        "class": name,
        "context_pixels": int(context),
        "leaked_pixels": int(leaked),
        "leakage": leaked / context if context else float("nan"),
    }
