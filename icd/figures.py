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
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["train"]
    store = ShardStore(score_shards)
    names = ClassList.of_dataset(dataset).names
    rows = []
    for image_id in dataset["splits"][split][:count]:
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
        rows.append((f"{image_id}\n{names[dataset['labels'][image_id][0]]}", panels))
    _panel_grid(out_path, FIG4_COLUMNS, rows)


def _panel_grid(out_path, columns: tuple[str, ...], rows: list[tuple[str, list[np.ndarray]]]) -> None:
    """A figure of one row of panels per image (label, panels: RGB images, or maps in [0, 1] drawn with a colour
    map), the columns titled, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(
        max(1, len(rows)), len(columns), figsize=(2 * len(columns), 2 * max(1, len(rows))), squeeze=False
    )
    for row, (label, panels) in enumerate(rows):
        for column, (axis, panel) in enumerate(zip(axes[row], panels, strict=True)):
            axis.imshow(panel, cmap="jet" if panel.ndim == 2 else None, vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(columns[column], fontsize=9)
        axes[row][0].set_ylabel(label, fontsize=8)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)


OOD_COLUMNS = ("image", "class context", "CAM fg", "CAM fg, OoD", "ICD CRF seed", "ICD CRF seed, OoD", "ground truth")


def ood_figure(
    out_path,
    dataset: dict,
    score_shards: list[str],
    ood_score_shards: list[str],
    seeds_root,
    *,
    suffix: str,
    canvas: int,
    count: int = 6,
) -> None:
    """Fig. 4 with and without W-OoD for the same images: the first `count` training images where a class's
    context cue shows (the synthetic generator's ContextMasks), that class's CAM from the primary network and from
    the OoD network (`ood_score_shards`, seed sets suffixed `suffix`), both networks' `icd_crf` seeds, and the
    ground truth; the second column tints the context pixels magenta."""
    from icd.context_leakage import CONTEXT_MASKS

    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["train"]
    classes = ClassList.of_dataset(dataset)
    plain, with_ood = ShardStore(score_shards), ShardStore(ood_score_shards)
    rows = []
    for image_id in dataset["splits"][split]:
        cues = read_mask(f"{dataset['voc_root']}/{CONTEXT_MASKS}/{image_id}.png")
        shown = [position for position, c in enumerate(dataset["labels"][image_id]) if (cues == c).any()]
        if not shown:
            continue
        position, image = shown[0], read_rgb(paths.image(image_id))
        c = dataset["labels"][image_id][position]
        cams = [
            upsample(store[image_id][:1, position : position + 1], canvas, *image.shape[:2])[0, 0]
            for store in (plain, with_ood)
        ]
        context = image.copy()
        context[cues == c] = (0.5 * context[cues == c] + 0.5 * np.array([255, 0, 255])).astype(np.uint8)
        panels = [
            image,
            context,
            *(_heat(cam) for cam in cams),
            *(PALETTE[read_mask(f"{seeds_root}/icd_crf{end}/{image_id}.png")] for end in ("", suffix)),
            PALETTE[read_mask(paths.ground_truth(split, image_id))],
        ]
        rows.append((f"{image_id}\n{classes.names[c]}", panels))
        if len(rows) == count:
            break
    _panel_grid(out_path, OOD_COLUMNS, rows)
