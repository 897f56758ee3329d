"""Pseudo-masks (seeds) from score maps, as the official `_generate_seed`, plus the CAM baseline.

All maps here are at image resolution, one channel per present class (k x H x W), with `classes`
the present VOC indices (1..20) in the same order.

ICD seeds (threshold T, Table 2): each class's score is split into its positive part, divided by
its maximum, and its negative part, divided by its minimum. Foreground candidates are pixels where
some class's normalised positive part exceeds T; background where every present class's normalised
negative part exceeds T. A pixel that is both or neither is 255. Where several classes are
foreground, the class maximising (min-max normalised positive CAM, joint over classes and pixels) x
(normalised ICD score) wins; if that product is flat there, 255. T = 0 is the official rule.
"""

from __future__ import annotations

import numpy as np

from icd.data.classes import IGNORE_LABEL

EPSILON = 1e-5  # the official code's floor for "positive" and for divisions


def _joint_min_max(values: np.ndarray) -> np.ndarray:
    """(x - min) / max(max - min, 1e-5) over all classes and pixels together (official `norm_score`)."""
    values = values - values.min()
    return values / max(float(values.max()), EPSILON)


def icd_seed(scores: np.ndarray, classes: list[int], cam: np.ndarray, *, threshold: float = 0.0) -> np.ndarray:
    """The seed (H x W uint8: 0 background, class index, 255 undecided) of one image's ICD scores."""
    cut = max(threshold, EPSILON)
    positive = np.maximum(scores, 0) / np.maximum(scores.max(axis=(1, 2), keepdims=True), EPSILON)
    negative = np.minimum(scores, 0) / np.minimum(scores.min(axis=(1, 2), keepdims=True), -EPSILON)
    proposal = positive > cut
    candidate = proposal.argmax(axis=0)
    foreground = proposal.any(axis=0)
    background = (negative > cut).all(axis=0)
    undefined = ~(background ^ foreground)
    if len(classes) > 1:
        combined = _joint_min_max(np.maximum(cam, 0)) * positive
        conflict = proposal.sum(axis=0) > 1
        candidate = np.where(conflict, combined.argmax(axis=0), candidate)
        undefined |= (combined.max(axis=0) - combined.min(axis=0) <= EPSILON) & foreground
    seed = np.asarray(classes, dtype=np.uint8)[candidate]
    seed[background] = 0
    seed[undefined] = IGNORE_LABEL
    return seed


def saliency_seed(scores: np.ndarray, classes: list[int], cam: np.ndarray, saliency: np.ndarray, *,
                  threshold: float = 0.0, saliency_background: float = 0.01) -> np.ndarray:
    """ICD foreground with the background taken from a saliency map (the paper's I+S seeds).

    Background = saliency below `saliency_background`; when the salient area covers under 1 % of the
    image (a failed saliency map), only pixels ICD also calls background, as the official code.
    """
    seed = icd_seed(scores, classes, cam, threshold=threshold)
    icd_background = seed == 0
    background = saliency < saliency_background
    if (~background).mean() < 0.01:
        background &= icd_background
    seed[seed == 0] = IGNORE_LABEL  # ICD's own background is replaced by the saliency one
    seed[background] = 0
    return seed


def cam_seed(cam: np.ndarray, classes: list[int], *, background_threshold: float) -> np.ndarray:
    """The CAM baseline: per-class max-normalised positive CAM against a constant background score."""
    normalised = np.maximum(cam, 0) / np.maximum(cam.max(axis=(1, 2), keepdims=True), EPSILON)
    stacked = np.concatenate([np.full((1, *cam.shape[1:]), background_threshold), normalised])
    return np.asarray([0, *classes], dtype=np.uint8)[stacked.argmax(axis=0)]


def seed_variants(saliency: bool) -> list[str]:
    """Seed folders the pipeline writes: the CAM baseline, the Table 3 ablation steps, saliency fusion."""
    return ["cam", "icd_bottom_up", "icd_refined", "icd", "icd_crf"] + (["icd_sal"] if saliency else [])


def image_seeds(image: np.ndarray, scores: np.ndarray, classes: list[int], *, threshold: float,
                cam_background: float, crf: dict, saliency: np.ndarray | None = None,
                saliency_background: float = 0.01, ablation_scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Every seed variant of one image from its upsampled score maps (icd.scores.SCORE_MAPS order).

    `ablation_scores`, the maps of a network trained without top-down adaptation, give Table 3's
    bottom-up and refined seeds (with that network's own CAM breaking overlaps), as the paper's
    ablation credits the adaptation step with fine-tuning the backbone; by default they come from `scores`.
    """
    from icd.crf import refine_seed

    cam, _, _, adapted = scores
    ablation_cam, bottom_up, refined, _ = scores if ablation_scores is None else ablation_scores
    seeds = {
        "cam": cam_seed(cam, classes, background_threshold=cam_background),
        "icd_bottom_up": icd_seed(bottom_up, classes, ablation_cam, threshold=threshold),
        "icd_refined": icd_seed(refined, classes, ablation_cam, threshold=threshold),
    }
    if np.isfinite(adapted).all():  # a model trained without the top-down branch has no adapted scores
        seeds["icd"] = icd_seed(adapted, classes, cam, threshold=threshold)
        seeds["icd_crf"] = refine_seed(image, seeds["icd"], **crf)
        if saliency is not None:
            seeds["icd_sal"] = saliency_seed(adapted, classes, cam, saliency, threshold=threshold,
                                             saliency_background=saliency_background)
    return seeds


def generate_seed_shard(out_dir, ids: list[str], *, dataset: dict, score_shards: list[str], canvas: int,
                        threshold: float, cam_background: float, saliency_background: float, crf: dict,
                        ablation_shards: list[str] | None = None, progress: bool = True) -> None:
    """Seeds of `ids` as VOC palettised PNGs under out_dir/<variant>/<id>.png, the folder written atomically.

    `ablation_shards`: score shards of the network trained without top-down adaptation (see image_seeds).
    """
    from tqdm import tqdm

    from icd.data.io import read_grey, read_rgb, write_mask
    from icd.data.voc import VOCPaths
    from icd.errors import DataError
    from icd.files import atomic_dir
    from icd.scores import upsample
    from icd.shards import ShardStore

    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"], dataset["saliency_root"])
    store = ShardStore(score_shards)
    ablation = ShardStore(ablation_shards) if ablation_shards else None
    with atomic_dir(out_dir) as tmp:
        for image_id in tqdm(ids, desc="seeds", disable=not progress, mininterval=2.0):
            image = read_rgb(paths.image(image_id))
            saliency = read_grey(paths.saliency(image_id)) if paths.saliency_root else None
            if saliency is not None and saliency.shape != image.shape[:2]:
                raise DataError(f"{paths.saliency(image_id)}: saliency map is {saliency.shape[1]}x{saliency.shape[0]} "
                                f"but its image is {image.shape[1]}x{image.shape[0]}. Resize the saliency maps.")
            scores = upsample(store[image_id], canvas, *image.shape[:2])
            ablation_scores = upsample(ablation[image_id], canvas, *image.shape[:2]) if ablation else None
            seeds = image_seeds(image, scores, dataset["labels"][image_id], threshold=threshold,
                                cam_background=cam_background, crf=crf, saliency=saliency,
                                saliency_background=saliency_background, ablation_scores=ablation_scores)
            for variant, seed in seeds.items():
                write_mask(tmp / variant / f"{image_id}.png", seed)


def collect_seed_shards(shard_dirs: list[str], out_root, variants: list[str]) -> None:
    """Gather per-shard seed folders into out_root/<variant>/ (hard links; each folder replaced atomically)."""
    import os
    import shutil
    from pathlib import Path

    from icd.errors import DataError
    from icd.files import atomic_dir

    for variant in variants:
        with atomic_dir(Path(out_root) / variant) as tmp:
            for shard in map(Path, shard_dirs):
                source = shard / variant
                if not source.is_dir():
                    raise DataError(f"{source}: missing seed folder. Rerun the seeds step for this shard.")
                for png in source.iterdir():
                    try:
                        os.link(png, tmp / png.name)
                    except OSError:  # another filesystem: copy instead
                        shutil.copy2(png, tmp / png.name)
