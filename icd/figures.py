"""Figures for the report: the paper's Fig. 4 (CAM vs ICD scores and the seeds they give)."""

from __future__ import annotations

import numpy as np

from icd.score_maps import upsample
from wsss.core.files import atomic_path
from wsss.core.shards import ShardStore
from wsss.data.classes import PALETTE, ClassList
from wsss.data.io import read_mask, read_rgb
from wsss.data.voc import VOCPaths

# Seed columns: the CAM baseline and ICD's adapted seeds, each without and with the same CRF.
FIG4_SEEDS = {"CAM seed": "cam", "CAM CRF seed": "cam_crf", "ICD seed": "icd", "ICD CRF seed": "icd_crf"}
FIG4_COLUMNS = ("image", "CAM fg", "CAM bg", "ICD fg", "ICD bg", *FIG4_SEEDS, "ground truth")


def _heat(values: np.ndarray) -> np.ndarray:
    """Non-negative map -> values in [0, 1] for a colour map (normalised per panel, as the paper)."""
    values = np.maximum(values, 0)
    return values / max(float(values.max()), 1e-5)


def seed_figure(out_path, dataset: dict, score_shards: list[str], seeds_root, *, canvas: int, count: int = 6) -> None:
    """Fig. 4: for `count` images of the training split, the first present class's CAM and adapted ICD
    scores split into their positive (foreground) and negative (background) parts, the CAM baseline's
    and ICD's seeds, each also through the CRF (so the CRF's share is visible), and the ground truth."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["train"]
    store = ShardStore(score_shards)
    names = ClassList.of_dataset(dataset).names
    ids = dataset["splits"][split][:count]
    figure, axes = plt.subplots(
        len(ids), len(FIG4_COLUMNS), figsize=(2 * len(FIG4_COLUMNS), 2 * len(ids)), squeeze=False
    )
    for row, image_id in enumerate(ids):
        image = read_rgb(paths.image(image_id))
        cam, _, _, adapted = upsample(store[image_id][:, :1], canvas, *image.shape[:2])
        panels = [
            image,
            _heat(cam[0]),
            _heat(-cam[0]),
            _heat(adapted[0]),
            _heat(-adapted[0]),
            *(PALETTE[read_mask(f"{seeds_root}/{variant}/{image_id}.png")] for variant in FIG4_SEEDS.values()),
            PALETTE[read_mask(paths.ground_truth(split, image_id))],
        ]
        for column, (axis, panel) in enumerate(zip(axes[row], panels, strict=True)):
            axis.imshow(panel, cmap="jet" if panel.ndim == 2 else None, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(FIG4_COLUMNS[column], fontsize=9)
        axes[row][0].set_ylabel(f"{image_id}\n{names[dataset['labels'][image_id][0]]}", fontsize=8)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
