"""Score maps read back at image resolution: the resize every consumer applies, and Table 1's pixel AP.

`icd.scores` writes the maps at feature resolution over the padded canvas; seeds, figures and the
evaluations resize them here. Nothing here imports torch: these are light jobs (a few seconds each), for
which importing it would cost about as much CPU as their work.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from icd.networks import SCORE_MAPS
from wsss.core.shards import ShardStore
from wsss.data.classes import IGNORE_LABEL, ClassList
from wsss.data.io import read_mask
from wsss.data.voc import VOCPaths
from wsss.metrics import PixelAveragePrecision


def _linear_taps(source: int, target: int, kept: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The first `kept` of `target` outputs of a half-pixel linear resize from `source` samples: (lower index,
    upper index, lower weight, upper weight), in float32 as PyTorch's CPU kernel computes them (source position
    (i + 0.5) source / target - 0.5 floored at 0, index floored, the last sample repeated at the edge)."""
    if source == target:
        index = np.arange(kept)
        return index, index, np.ones(kept, np.float32), np.zeros(kept, np.float32)
    ratio = np.float32(source) / np.float32(target)
    position = np.maximum(ratio * (np.arange(kept, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5), 0)
    lower = np.minimum(np.floor(position).astype(np.int64), source - 1)
    upper_weight = np.clip(position - lower.astype(np.float32), 0, 1).astype(np.float32)
    upper = lower + (lower < source - 1)
    return lower, upper, np.float32(1) - upper_weight, upper_weight


def upsample(maps: np.ndarray, canvas: int, height: int, width: int) -> np.ndarray:
    """(..., h, w) feature-resolution maps -> (..., height, width) float32: the bilinear resize (half-pixel
    centres, as `F.interpolate(..., align_corners=False)`) of the maps to the canvas x canvas, cropped to the
    image at its top-left corner. Only the kept rows and columns are computed: along the columns first, then
    the rows, as PyTorch's kernel combines the four taps."""
    maps = np.asarray(maps, dtype=np.float32)
    left, right, left_weight, right_weight = _linear_taps(maps.shape[-1], canvas, width)
    top, bottom, top_weight, bottom_weight = _linear_taps(maps.shape[-2], canvas, height)
    across = maps[..., left] * left_weight + maps[..., right] * right_weight  # (..., h, width)
    return across[..., top, :] * top_weight[:, None] + across[..., bottom, :] * bottom_weight[:, None]


def scored_training_images(
    dataset: dict, score_shards: list[str], *, canvas: int, description: str, progress: bool = True
):
    """Yield (id, ground truth, image-resolution score maps, present classes) over the training split.

    The one loop that every score-based evaluation (Table 1, the Table 2 sweep) walks.
    """
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["train"]
    store = ShardStore(score_shards)
    num_classes = ClassList.of_dataset(dataset).num_classes
    for image_id in tqdm(dataset["splits"][split], desc=description, disable=not progress, mininterval=2.0):
        gt = read_mask(paths.ground_truth(split, image_id), num_classes)
        yield image_id, gt, upsample(store[image_id], canvas, *gt.shape), dataset["labels"][image_id]


def score_map_average_precision(
    dataset: dict, networks: dict[str, dict], *, canvas: int, progress: bool = True
) -> dict[str, dict[str, float]]:
    """Table 1: pixel-level AP per class and its mean over classes, for each score map of each network.

    Each class ranks every valid pixel of the images holding it by that class's score. `networks`: {suffix:
    {"maps": the SCORE_MAPS rows to report, "scores": the network's score shards}} (icd.networks: the primary
    network has no suffix and reports every map its seeds use; the ablation network `no_td` its bottom-up and
    refined maps as `<map>_no_td`, matching Table 3's `icd_<map>_no_td` seeds).
    """
    classes = ClassList.of_dataset(dataset)
    (first, walked), *others = networks.items()
    stores = {suffix: ShardStore(network["scores"]) for suffix, network in others}
    meters = {
        name + suffix: PixelAveragePrecision(classes.num_foreground)
        for suffix, network in networks.items()
        for name in network["maps"]
    }
    images = scored_training_images(dataset, walked["scores"], canvas=canvas, description="pixel AP", progress=progress)
    for image_id, gt, first_maps, present in images:
        valid = gt != IGNORE_LABEL
        for suffix, network in networks.items():
            maps = first_maps if suffix == first else upsample(stores[suffix][image_id], canvas, *gt.shape)
            stacked = dict(zip(SCORE_MAPS, maps, strict=True))
            for position, class_index in enumerate(present):
                for name in network["maps"]:
                    scores = stacked[name][position].astype(np.float16)
                    meters[name + suffix].add(class_index - 1, scores, gt == class_index, valid)
    table = {}
    for name, meter in meters.items():
        per_class = meter.per_class()
        table[name] = {
            "mAP": float(np.nanmean(per_class)),
            **{cls: float(ap) for cls, ap in zip(classes.foreground, per_class, strict=True) if not np.isnan(ap)},
        }
    return table
