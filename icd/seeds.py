"""Pseudo-masks (seeds) from score maps, as the official `_generate_seed`, plus the CAM baselines.

All maps here are at image resolution, one channel per present class (k x H x W), with `classes`
the present class indices (1..K of the dataset's classes) in the same order.

ICD seeds (threshold T, Table 2): each class's score is split into its positive part, divided by
its maximum, and its negative part, divided by its minimum. Foreground candidates are pixels where
some class's normalised positive part exceeds T; background where every present class's normalised
negative part exceeds T. A pixel that is both or neither is 255. Where several classes are
foreground, the class maximising (min-max normalised positive CAM, joint over classes and pixels) x
(normalised ICD score) wins; if that product is flat there, 255. T = 0 is the official rule.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from wsss.data.classes import IGNORE_LABEL

EPSILON = 1e-5  # the official code's floor for "positive" and for divisions


def _joint_min_max(values: np.ndarray) -> np.ndarray:
    """(x - min) / max(max - min, 1e-5) over all classes and pixels together (official `norm_score`)."""
    values = values - values.min()
    return values / max(float(values.max()), EPSILON)


def _icd_decision(scores: np.ndarray, classes: list[int], cam: np.ndarray, threshold: float):
    """The official per-pixel decision, before background and 255 are written.

    Returns (labels, foreground, background, ties), each H x W: the class a foreground pixel would
    take, where some class is positive, where every present class is negative (ICD's own background),
    and the multi-class foreground pixels whose CAM x ICD product is flat (official: 255).
    """
    cut = max(threshold, EPSILON)
    positive = np.maximum(scores, 0) / np.maximum(scores.max(axis=(1, 2), keepdims=True), EPSILON)
    negative = np.minimum(scores, 0) / np.minimum(scores.min(axis=(1, 2), keepdims=True), -EPSILON)
    proposal = positive > cut
    candidate = proposal.argmax(axis=0)
    foreground = proposal.any(axis=0)
    ties = np.zeros_like(foreground)
    if len(classes) > 1:
        combined = _joint_min_max(np.maximum(cam, 0)) * positive
        candidate = np.where(proposal.sum(axis=0) > 1, combined.argmax(axis=0), candidate)
        ties = (combined.max(axis=0) - combined.min(axis=0) <= EPSILON) & foreground
    labels = np.asarray(classes, dtype=np.uint8)[candidate]
    return labels, foreground, (negative > cut).all(axis=0), ties


def _write_seed(labels, foreground, background, ties) -> np.ndarray:
    """The official assembly: background 0, then 255 where `~(bg ^ fg)` (both or neither) or on ties."""
    seed = labels.copy()
    seed[background] = 0
    seed[~(background ^ foreground) | ties] = IGNORE_LABEL
    return seed


def icd_seed(scores: np.ndarray, classes: list[int], cam: np.ndarray, *, threshold: float = 0.0) -> np.ndarray:
    """The seed (H x W uint8: 0 background, class index, 255 undecided) of one image's ICD scores."""
    labels, foreground, background, ties = _icd_decision(scores, classes, cam, threshold)
    return _write_seed(labels, foreground, background, ties)


def saliency_seed(
    scores: np.ndarray,
    classes: list[int],
    cam: np.ndarray,
    saliency: np.ndarray,
    *,
    threshold: float = 0.0,
    saliency_background: float = 0.01,
) -> np.ndarray:
    """ICD foreground with the background taken from a saliency map (the paper's I+S seeds).

    As the official saliency path of `_generate_seed`: background = saliency below
    `saliency_background`, and when the salient area covers under 1 % of the image (a failed map)
    only the pixels ICD also calls background. The rest is ICD's rule with that background, so a
    pixel ICD calls foreground and saliency calls background is both, hence 255 (`~(bg ^ fg)`),
    and a pixel neither calls foreground nor background is 255 too. (Official T is 0; at T > 0 the
    failed-map fallback uses ICD's background at T, as `icd_seed` does.) No CRF, as the official path.
    """
    labels, foreground, icd_background, ties = _icd_decision(scores, classes, cam, threshold)
    background = saliency < saliency_background
    if (~background).mean() < 0.01:
        background &= icd_background
    return _write_seed(labels, foreground, background, ties)


def superpixel_means(maps: np.ndarray, superpixels: np.ndarray) -> np.ndarray:
    """Each of the k x H x W maps replaced, at every pixel, by its mean over the pixel's superpixel (H x W ids)."""
    ids = superpixels.ravel().astype(np.intp)
    sizes = np.bincount(ids)
    sums = np.stack([np.bincount(ids, weights=values, minlength=sizes.size) for values in maps.reshape(len(maps), -1)])
    return (sums / np.maximum(sizes, 1))[:, ids].reshape(maps.shape)


def cam_seed(
    cam: np.ndarray, classes: list[int], *, background_threshold: float, superpixels: np.ndarray | None = None
) -> np.ndarray:
    """The CAM baseline: per-class max-normalised positive CAM against a constant background score.

    With `superpixels` (the merged superpixels ICD's refinement uses, H x W ids), each class's
    normalised CAM is first averaged inside every superpixel: the `cam_sp` baseline, which gives the
    CAM the same region prior ICD's seeds get.
    """
    normalised = np.maximum(cam, 0) / np.maximum(cam.max(axis=(1, 2), keepdims=True), EPSILON)
    if superpixels is not None:
        normalised = superpixel_means(normalised, superpixels)
    stacked = np.concatenate([np.full((1, *cam.shape[1:]), background_threshold), normalised])
    return np.asarray([0, *classes], dtype=np.uint8)[stacked.argmax(axis=0)]


def variant_thresholds(variants: list[str], threshold: float, cam_backgrounds: dict[str, float]) -> dict[str, float]:
    """The `threshold` column of each seed folder's row: the background threshold a CAM variant used
    (`cam_crf` is `cam`'s seed through the CRF), T for the ICD variants."""
    backgrounds = {**cam_backgrounds, "cam_crf": cam_backgrounds["cam"]}
    return {variant: backgrounds.get(variant, threshold) for variant in variants}


def _wants(variants: Collection[str] | None, *names: str) -> bool:
    """Whether a seed job asked for `variants` (None: all) makes any of `names`."""
    return variants is None or any(name in variants for name in names)


def _through_crf(image: np.ndarray, seed: np.ndarray, crf: dict, num_classes: int) -> np.ndarray:
    """`seed` through the seed CRF (`wsss.crf.refine.refine_seed`), imported only here: it loads torch, which a
    job making seeds without a CRF never needs (its import costs about as much CPU as such a job's work)."""
    from wsss.crf.refine import refine_seed

    return refine_seed(image, seed, num_classes=num_classes, **crf)


def image_seeds(
    image: np.ndarray,
    scores: np.ndarray,
    classes: list[int],
    superpixels: np.ndarray | None,
    *,
    num_classes: int,
    threshold: float | None = None,
    cam_backgrounds: dict[str, float] | None = None,
    crf: dict | None = None,
    saliency: np.ndarray | None = None,
    saliency_background: float = 0.01,
    variants: Collection[str] | None = None,
) -> dict[str, np.ndarray]:
    """The seed variants of one image from its upsampled score maps (icd.score_maps.SCORE_MAPS order).

    `variants`: the ones to make (one family's, icd.seed_sets), each from only the inputs and settings it
    needs; None makes every variant the inputs allow. `num_classes`: the dataset's labels, background included
    (the seed CRF has a channel per label). `cam_backgrounds`: the background threshold of `cam`
    and of `cam_sp` (each its own sweep's best). `cam_crf` is the `cam` seed through the same CRF (`crf`,
    wsss.crf.refine.refine_seed) as `icd_crf`. Table 3's `icd_bottom_up` and `icd_refined` come from the
    same network's `scores`, as the official inference writes S and S' beside S''. A network trained without
    top-down adaptation has no adapted scores (NaN), hence no `icd`, `icd_crf`, `icd_sal`: asking for them is an
    error, None leaves them out.
    """
    cam, bottom_up, refined, adapted = scores
    seeds = {}
    if _wants(variants, "cam", "cam_crf"):
        seeds["cam"] = cam_seed(cam, classes, background_threshold=cam_backgrounds["cam"])
    if _wants(variants, "cam_crf"):
        seeds["cam_crf"] = _through_crf(image, seeds["cam"], crf, num_classes)
    if _wants(variants, "cam_sp"):
        seeds["cam_sp"] = cam_seed(
            cam, classes, background_threshold=cam_backgrounds["cam_sp"], superpixels=superpixels
        )
    if _wants(variants, "icd_bottom_up"):
        seeds["icd_bottom_up"] = icd_seed(bottom_up, classes, cam, threshold=threshold)
    if _wants(variants, "icd_refined"):
        seeds["icd_refined"] = icd_seed(refined, classes, cam, threshold=threshold)
    adapted_variants = ("icd", "icd_crf") + (("icd_sal",) if saliency is not None else ())
    if _wants(variants, *adapted_variants) and np.isfinite(adapted).all():
        seeds["icd"] = icd_seed(adapted, classes, cam, threshold=threshold)
        if _wants(variants, "icd_crf"):
            seeds["icd_crf"] = _through_crf(image, seeds["icd"], crf, num_classes)
        if saliency is not None and _wants(variants, "icd_sal"):
            seeds["icd_sal"] = saliency_seed(
                adapted, classes, cam, saliency, threshold=threshold, saliency_background=saliency_background
            )
    if variants is None:
        return seeds
    missing = sorted(set(variants) - set(seeds))
    if missing:
        raise ValueError(
            f"cannot make the seeds {missing} from these inputs: icd_sal needs a saliency map, and icd, icd_crf, "
            "icd_sal a network trained with top-down adaptation"
        )
    return {name: seeds[name] for name in variants}


def generate_seed_shard(
    out_dir,
    ids: list[str],
    *,
    dataset: dict,
    score_shards: list[str],
    canvas: int,
    variants: Collection[str] | None = None,
    superpixel_shards: list[str] | None = None,
    suffix: str = "",
    cam_backgrounds: dict[str, float] | None = None,
    threshold: float | None = None,
    saliency_background: float = 0.01,
    crf: dict | None = None,
    progress: bool = True,
) -> None:
    """Seeds of `ids` as VOC palettised PNGs under out_dir/<variant><suffix>/<id>.png, the folder written
    atomically.

    `score_shards`: one network's score maps; `suffix`: that network's (icd.networks: none for the primary one).
    `variants`: the seed sets to write (a family of icd.seed_sets: one job per family and shard), None for
    all. Only what they read is opened: `superpixel_shards`, the merged superpixels (image resolution)
    `cam_sp` averages in; the saliency maps of the dataset for `icd_sal`.
    """
    from tqdm import tqdm

    from icd.score_maps import upsample
    from wsss.core.errors import DataError
    from wsss.core.files import atomic_dir
    from wsss.core.shards import ShardStore
    from wsss.data.classes import ClassList
    from wsss.data.io import read_grey, read_rgb, write_mask
    from wsss.data.voc import VOCPaths

    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"], dataset["saliency_root"])
    store = ShardStore(score_shards)
    num_classes = ClassList.of_dataset(dataset).num_classes
    regions = ShardStore(superpixel_shards) if superpixel_shards and _wants(variants, "cam_sp") else None
    read_saliency = paths.saliency_root is not None and _wants(variants, "icd_sal")
    with atomic_dir(out_dir) as tmp:
        for image_id in tqdm(ids, desc="seeds", disable=not progress, mininterval=2.0):
            image = read_rgb(paths.image(image_id))
            saliency = read_grey(paths.saliency(image_id)) if read_saliency else None
            if saliency is not None and saliency.shape != image.shape[:2]:
                raise DataError(
                    f"{paths.saliency(image_id)}: saliency map is {saliency.shape[1]}x{saliency.shape[0]} "
                    f"but its image is {image.shape[1]}x{image.shape[0]}. Resize the saliency maps."
                )
            seeds = image_seeds(
                image,
                upsample(store[image_id], canvas, *image.shape[:2]),
                dataset["labels"][image_id],
                regions[image_id] if regions else None,
                num_classes=num_classes,
                threshold=threshold,
                cam_backgrounds=cam_backgrounds,
                crf=crf,
                saliency=saliency,
                saliency_background=saliency_background,
                variants=variants,
            )
            for variant, seed in seeds.items():
                write_mask(tmp / f"{variant}{suffix}" / f"{image_id}.png", seed, atomic=False)


def collect_seed_shards(shard_dirs: list[str], out_root, variants: list[str]) -> None:
    """Gather per-shard seed folders into out_root/<variant>/ (hard links; each folder replaced atomically)."""
    import os
    import shutil
    from pathlib import Path

    from wsss.core.errors import DataError
    from wsss.core.files import atomic_dir

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
