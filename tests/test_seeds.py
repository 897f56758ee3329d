"""Seed generation against a pixel-by-pixel re-implementation and a numpy transcription of the official
`_generate_seed` (js-fan/ICD run_icd.py), and the CAM baselines against brute force."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from icd.seed_sets import seed_families, seed_variants
from icd.seeds import cam_seed, icd_seed, image_seeds, saliency_seed, variant_thresholds
from wsss.data.classes import NUM_CLASSES


def reference_seed(scores, classes, cam, threshold):
    """The official rule written as plain loops over pixels."""
    k, height, width = scores.shape
    cut = max(threshold, 1e-5)
    top = [max(scores[c].max(), 1e-5) for c in range(k)]
    bottom = [min(scores[c].min(), -1e-5) for c in range(k)]
    cam_pos = np.maximum(cam, 0)
    low, high = cam_pos.min(), cam_pos.max()
    seed = np.zeros((height, width), np.uint8)
    for y in range(height):
        for x in range(width):
            pos = [max(scores[c, y, x], 0) / top[c] for c in range(k)]
            neg = [min(scores[c, y, x], 0) / bottom[c] for c in range(k)]
            fg_classes = [c for c in range(k) if pos[c] > cut]
            is_bg = all(n > cut for n in neg)
            if bool(fg_classes) == is_bg:
                seed[y, x] = 255
            elif is_bg:
                seed[y, x] = 0
            else:
                winner = fg_classes[0]
                if k > 1:
                    combined = [(cam_pos[c, y, x] - low) / max(high - low, 1e-5) * pos[c] for c in range(k)]
                    if len(fg_classes) > 1:
                        winner = int(np.argmax(combined))
                    if max(combined) - min(combined) <= 1e-5:
                        seed[y, x] = 255
                        continue
                seed[y, x] = classes[winner]
    return seed


@pytest.mark.parametrize("seed_value", range(4))
@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_icd_seed_matches_the_pixel_loop(seed_value, threshold):
    rng = np.random.default_rng(seed_value)
    k = 1 + seed_value % 3
    classes = sorted(rng.choice(np.arange(1, 21), k, replace=False).tolist())
    scores = rng.normal(size=(k, 9, 13))
    cam = rng.normal(size=(k, 9, 13))
    assert np.array_equal(
        icd_seed(scores, classes, cam, threshold=threshold), reference_seed(scores, classes, cam, threshold)
    )


def test_hand_built_two_class_seed():
    classes = [8, 12]  # cat, dog
    scores = np.array([[[2.0, 1.0, -1.0, -2.0]], [[-1.0, 1.0, 2.0, -2.0]]])
    cam = np.array([[[2.0, 3.0, 0.0, 0.0]], [[0.0, 1.0, 5.0, 0.0]]])
    # pixel 0: only cat positive; 1: both positive, the CAM x score product prefers cat;
    # 2: only dog; 3: both negative -> background.
    assert icd_seed(scores, classes, cam).tolist() == [[8, 8, 12, 0]]
    # Without CAM signal a multi-class foreground pixel is undecided, as the official code.
    assert icd_seed(scores, classes, np.zeros_like(cam)).tolist() == [[255, 255, 255, 0]]
    # A higher threshold leaves weak evidence undecided: dog's 1.0 / 2.0 = 0.5 is not > 0.6.
    assert icd_seed(scores, classes, cam, threshold=0.6).tolist() == [[8, 255, 12, 0]]


def official_generate_seed(scores, label, cams, sal=None):
    """numpy transcription of the official `_generate_seed` after its resize/crop: `scores` (ICD) and `cams`
    k x H x W at image resolution, `label` the 0-based class indices, `sal` saliency / 255 or None.
    Returns the seed before the CRF (what the official code saves as `sal/<id>.png` on the saliency path)."""
    scores_fg = np.maximum(scores, 0) / np.maximum(scores.max(axis=(1, 2), keepdims=True), 1e-5)
    proposal_fg = scores_fg > 1e-5
    candidate_fg = proposal_fg.argmax(axis=0)
    if len(label) > 1:
        positive_cams = np.maximum(cams, 0)
        positive_cams = positive_cams - positive_cams.min()
        comp_scores = positive_cams / max(positive_cams.max(), 1e-5) * scores_fg  # norm_score(...) * scores_fg
        conflict_fg = proposal_fg.sum(axis=0) > 1
        candidate_fg = candidate_fg * (1 - conflict_fg) + comp_scores.argmax(axis=0) * conflict_fg
    fg = proposal_fg.max(axis=0)
    scores_bg = np.minimum(scores, 0) / np.minimum(scores.min(axis=(1, 2), keepdims=True), -1e-5)
    if sal is not None:
        bg = sal < 0.01
        if (1.0 - float(bg.sum()) / bg.size) < 0.01:
            bg &= (scores_bg > 1e-5).min(axis=0)
    else:
        bg = (scores_bg > 1e-5).min(axis=0)
    undefined = ~(bg ^ fg)
    if len(label) > 1:
        undefined |= ((comp_scores.max(axis=0) - comp_scores.min(axis=0)) <= 1e-5) & fg
    h, w = fg.shape
    seed = (np.array(label) + 1)[candidate_fg.ravel()].reshape(h, w).astype(np.uint8)
    seed[bg] = 0
    seed[undefined] = 255
    return seed


def random_image_case(seed_value, height=24, width=31):
    """Scores, CAM and 1-3 present classes; scores shifted per class so that foreground, background and
    multi-class overlaps all occur."""
    rng = np.random.default_rng(seed_value)
    k = 1 + seed_value % 3
    classes = sorted(rng.choice(np.arange(1, 21), k, replace=False).tolist())
    scores = rng.normal(size=(k, height, width)) + rng.uniform(-0.5, 0.5, size=(k, 1, 1))
    cam = rng.normal(size=(k, height, width))
    return rng, classes, scores, cam


@pytest.mark.parametrize("seed_value", range(6))
def test_saliency_seed_matches_the_official_saliency_path(seed_value):
    """Saliency supplies the background; ICD foreground on saliency background is undefined (255)."""
    rng, classes, scores, cam = random_image_case(seed_value)
    saliency = np.where(rng.random(scores.shape[1:]) < 0.5, 0.0, rng.random(scores.shape[1:]))
    expected = official_generate_seed(scores, np.asarray(classes) - 1, cam, saliency)
    got = saliency_seed(scores, classes, cam, saliency)
    assert np.array_equal(got, expected)
    conflict = (saliency < 0.01) & (icd_seed(scores, classes, cam) > 0) & (icd_seed(scores, classes, cam) < 255)
    assert conflict.any() and (got[conflict] == 255).all()
    # The ICD seed itself is the official path without saliency.
    assert np.array_equal(icd_seed(scores, classes, cam), official_generate_seed(scores, np.asarray(classes) - 1, cam))


@pytest.mark.parametrize("seed_value", range(3))
def test_a_failed_saliency_map_keeps_only_the_background_icd_agrees_on(seed_value):
    _rng, classes, scores, cam = random_image_case(seed_value)
    saliency = np.zeros(scores.shape[1:])
    saliency[0, :3] = 0.8  # salient area under 1 % of the image
    expected = official_generate_seed(scores, np.asarray(classes) - 1, cam, saliency)
    assert np.array_equal(saliency_seed(scores, classes, cam, saliency), expected)


def test_saliency_replaces_the_background():
    scores = np.array([[[1.0, -1.0, -1.0, 1.0]]])
    cam = np.ones_like(scores)
    saliency = np.array([[0.9, 0.0, 0.5, 0.0]])
    # fg from ICD, bg only where saliency < 0.01: pixel 2 (ICD background, salient) is neither -> 255;
    # pixel 3 (ICD foreground, saliency background) is both -> 255, as the official `~(bg ^ fg)`.
    assert saliency_seed(scores, [3], cam, saliency).tolist() == [[3, 0, 255, 255]]
    # A failed saliency map (salient area < 1 %) only keeps the background ICD agrees on.
    empty = np.zeros((1, 4))
    assert saliency_seed(scores, [3], cam, empty).tolist() == [[3, 0, 0, 3]]


def test_cam_seed_against_a_background_threshold():
    cam = np.array([[[4.0, 1.0, 0.0]], [[0.0, 3.0, -1.0]]])
    assert cam_seed(cam, [5, 9], background_threshold=0.2).tolist() == [[5, 9, 0]]
    assert cam_seed(cam, [5, 9], background_threshold=0.5).tolist() == [[5, 9, 0]]
    assert cam_seed(cam, [5, 9], background_threshold=1.0).tolist() == [[0, 0, 0]]


def brute_force_cam_sp_seed(cam, classes, superpixels, background):
    """cam_sp by loops: per superpixel, each class's mean of max(CAM, 0) / its max over the image; the
    highest wins unless the background score is higher or equal (background first, as argmax)."""
    normalised = [np.maximum(c, 0) / max(c.max(), 1e-5) for c in cam]
    seed = np.zeros(superpixels.shape, np.uint8)
    for region in np.unique(superpixels):
        inside = superpixels == region
        means = [float(n[inside].mean()) for n in normalised]
        best = int(np.argmax(means))
        seed[inside] = classes[best] if means[best] > background else 0
    return seed


@pytest.mark.parametrize("seed_value", range(4))
def test_cam_sp_averages_the_normalised_cam_inside_superpixels(seed_value):
    rng = np.random.default_rng(seed_value)
    k = 1 + seed_value % 3
    classes = sorted(rng.choice(np.arange(1, 21), k, replace=False).tolist())
    cam = rng.normal(size=(k, 20, 27)) * rng.uniform(0.5, 5, size=(k, 1, 1))
    superpixels = (
        rng.integers(0, 4, size=(5, 7)).repeat(4, 0).repeat(4, 1)[:20, :27] + 4 * (np.arange(27) >= 13)
    ).astype(np.uint8)  # ids 0..7, a few missing
    for background in (0.1, 0.3):
        got = cam_seed(cam, classes, background_threshold=background, superpixels=superpixels)
        assert np.array_equal(got, brute_force_cam_sp_seed(cam, classes, superpixels, background))
    # Every pixel its own superpixel: the plain CAM baseline.
    singletons = np.arange(20 * 27).reshape(20, 27)
    assert np.array_equal(
        cam_seed(cam, classes, background_threshold=0.2, superpixels=singletons),
        cam_seed(cam, classes, background_threshold=0.2),
    )


def image_case():
    from wsss.core.config import load_config

    rng = np.random.default_rng(0)
    classes = [4, 15]
    full = rng.normal(size=(4, 2, 12, 16))
    image = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    superpixels = (np.arange(16)[None, :] // 4 + 4 * (np.arange(12)[:, None] // 6)).astype(np.uint8)
    options = {
        "num_classes": NUM_CLASSES,
        "threshold": 0.0,
        "cam_backgrounds": {"cam": 0.3, "cam_sp": 0.2},
        "crf": load_config()["crf"],
    }
    return classes, full, image, superpixels, options


def run_networks(saliency: bool, no_td: bool, top_down: bool = True, **extra) -> dict:
    """The networks (icd.networks) of the default config with these switches and `extra` network entries."""
    from icd.networks import configured_networks
    from wsss.core.config import load_config

    config = load_config(overrides={"icd": {"top_down": top_down}})
    config["networks"] = {**({} if no_td else {"no_td": None}), **extra}
    return configured_networks(config, saliency)


def test_every_seed_variant_is_made_from_its_own_source():
    """Table 3's steps from the network's scores (its own CAM breaking overlaps), the CAM baselines: `cam_crf` is
    `cam` through the seed CRF (`refine_seed`, which tests/test_crf.py holds to the official call: here, on
    12 x 16 px of noise, it differs on at most 1 px)."""
    from wsss.crf.refine import crf_official, refine_seed

    classes, full, image, superpixels, options = image_case()
    seeds = image_seeds(image, full, classes, superpixels, **options)
    assert np.array_equal(seeds["icd_bottom_up"], icd_seed(full[1], classes, full[0]))
    assert np.array_equal(seeds["icd_refined"], icd_seed(full[2], classes, full[0]))
    assert np.array_equal(seeds["icd"], icd_seed(full[3], classes, full[0]))
    assert np.array_equal(seeds["cam"], cam_seed(full[0], classes, background_threshold=0.3))
    assert np.array_equal(seeds["cam_crf"], refine_seed(image, seeds["cam"], num_classes=NUM_CLASSES, **options["crf"]))
    assert np.array_equal(seeds["cam_sp"], brute_force_cam_sp_seed(full[0], classes, superpixels, 0.2))
    assert np.array_equal(seeds["icd_crf"], refine_seed(image, seeds["icd"], num_classes=NUM_CLASSES, **options["crf"]))
    for name in ("cam", "icd"):
        assert (
            seeds[f"{name}_crf"] != crf_official(image, seeds[name], num_classes=NUM_CLASSES, **options["crf"])
        ).sum() <= 1


@pytest.mark.parametrize("saliency", [False, True])
def test_a_networks_seed_sets_are_exactly_what_image_seeds_writes_from_its_scores(saliency):
    classes, full, image, superpixels, options = image_case()
    seeds = image_seeds(
        image, full, classes, superpixels, saliency=np.full(image.shape[:2], 0.5) if saliency else None, **options
    )
    networks = run_networks(saliency, no_td=True)
    assert sorted(seeds) == sorted(networks["icd"].variants)
    variants = seed_variants(networks)
    assert len(set(variants)) == len(variants)
    assert variants[:3] == ["cam", "cam_crf", "cam_sp"]
    # The ablation network's seed sets: its bottom-up and refined steps, suffixed, after the primary's.
    assert variants[-2:] == ["icd_bottom_up_no_td", "icd_refined_no_td"]
    assert seed_variants(run_networks(saliency, no_td=False)) == variants[:-2]


def test_without_top_down_adaptation_no_adapted_seed_variant_is_listed_or_written():
    classes, full, image, superpixels, options = image_case()
    without_adapted = np.concatenate([full[:3], np.full_like(full[3:], np.nan)])  # what such a network infers
    seeds = image_seeds(image, without_adapted, classes, superpixels, saliency=np.full(image.shape[:2], 0.5), **options)
    networks = run_networks(saliency=True, no_td=True, top_down=False)
    assert list(networks) == ["icd"], "the ablation network would be the primary one again"
    assert sorted(seeds) == sorted(seed_variants(networks))
    assert not {"icd", "icd_crf", "icd_sal"} & set(seeds)


@pytest.mark.parametrize("top_down", [False, True])
@pytest.mark.parametrize("saliency", [False, True])
@pytest.mark.parametrize("no_td", [False, True])
def test_seed_families_partition_the_seed_sets(saliency, no_td, top_down):
    networks = run_networks(saliency, no_td, top_down, wide={"icd": {"lr": 0.5}})
    families = seed_families(networks)
    written = [variant for family in families.values() for variant in family.variants]
    assert sorted(written) == sorted(seed_variants(networks))
    assert len(set(written)) == len(written)  # each seed set written by exactly one family
    for name, family in families.items():
        network = networks[family.network]
        assert name.endswith(network.suffix) and set(family.base_variants) <= set(network.variants)


def test_each_family_writes_exactly_what_all_seeds_at_once_write():
    """One job per family (icd.seed_sets) makes the same PNG arrays as the single job that made every variant."""
    classes, full, image, superpixels, options = image_case()
    saliency = np.random.default_rng(1).random(image.shape[:2])
    inputs = dict(saliency=saliency, saliency_background=0.3, **options)
    everything = image_seeds(image, full, classes, superpixels, **inputs)
    for name, family in seed_families(run_networks(saliency=True, no_td=False)).items():
        made = image_seeds(image, full, classes, superpixels, variants=family.base_variants, **inputs)
        assert list(made) == list(family.variants), name
        assert all(np.array_equal(made[variant], everything[variant]) for variant in made), name
    # A family gets only what it reads: the CAM family has no threshold, the ICD family no CAM thresholds.
    only_icd = {key: value for key, value in options.items() if key != "cam_backgrounds"}
    made = image_seeds(image, full, classes, None, variants=["icd_bottom_up", "icd_refined", "icd"], **only_icd)
    assert all(np.array_equal(made[variant], everything[variant]) for variant in made)
    with pytest.raises(ValueError, match=r"cannot make the seeds \['icd_sal'\].*saliency"):
        image_seeds(image, full, classes, superpixels, variants=["icd_sal"], **options)


def test_each_seed_row_names_the_threshold_it_used():
    variants = list(run_networks(saliency=True, no_td=False)["icd"].variants)
    thresholds = variant_thresholds(variants, 0.1, {"cam": 0.25, "cam_sp": 0.35})
    assert thresholds == {**dict.fromkeys(variants, 0.1), "cam": 0.25, "cam_crf": 0.25, "cam_sp": 0.35}


def test_a_network_is_named_as_its_config_entry_says_and_refuses_what_it_cannot_be():
    """A user's network: the icd section with its overrides, its seed sets suffixed with its name; the errors name
    the key to fix."""
    from wsss.core.errors import ConfigError

    networks = run_networks(saliency=False, no_td=True, wide={"icd": {"lr": 0.5}, "seeds": ["cam", "icd_crf"]})
    assert list(networks) == ["icd", "no_td", "wide"]
    wide = networks["wide"]
    assert wide.icd == {**networks["icd"].icd, "lr": 0.5} and wide.folder == "networks/wide"
    assert seed_variants(networks)[-2:] == ["cam_wide", "icd_crf_wide"] and wide.score_maps == ("cam", "adapted")
    assert networks["no_td"].score_maps == ("bottom_up", "refined")
    with pytest.raises(ConfigError, match=r"networks.wide.icd.lr"):
        run_networks(saliency=False, no_td=True, wide={"icd": {"lr": -1}})
    with pytest.raises(ConfigError, match=r"networks.flat.seeds names \['icd_crf'\].*icd.top_down"):
        run_networks(saliency=False, no_td=True, flat={"icd": {"top_down": False}, "seeds": ["icd_crf"]})
    with pytest.raises(ConfigError, match=r"networks.wide.seeds names \['icd_sal'\]"):
        run_networks(saliency=False, no_td=True, wide={"icd": {"lr": 0.5}, "seeds": ["icd_sal"]})
    with pytest.raises(
        ConfigError,
        match=r"networks.crf: its seed set cam_crf would be written to the folder of the same name that network 'icd'",
    ):
        run_networks(saliency=False, no_td=True, crf={"icd": {"lr": 0.5}})
    with pytest.raises(ConfigError, match=r"networks.icd cannot be null"):
        run_networks(saliency=False, no_td=True, icd=None)


def half_pixel_bilinear_weights(source: int, target: int) -> np.ndarray:
    """target x source interpolation matrix of a bilinear resize that aligns pixel centres (MXNet's and
    torch's align_corners=False): target pixel i samples source position (i + 0.5) * source / target - 0.5,
    clamped to the first and last source pixels."""
    weights = np.zeros((target, source))
    for i in range(target):
        position = min(max((i + 0.5) * source / target - 0.5, 0.0), source - 1)
        low = int(np.floor(position))
        high = min(low + 1, source - 1)
        weights[i, low] += 1 - (position - low)
        weights[i, high] += position - low
    return weights


def test_upsample_resizes_to_the_canvas_then_crops_the_image_corner():
    """Score maps cover the padded canvas (image at its top-left corner): resizing them straight to the
    image, cropping another corner or swapping the axes would misplace every score."""
    from icd.score_maps import upsample

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 2, 6, 9))  # non-square: a swapped axis shows
    canvas, height, width = 41, 30, 21
    rows, columns = half_pixel_bilinear_weights(6, canvas), half_pixel_bilinear_weights(9, canvas)
    expected = np.einsum("yh,abhw,xw->abyx", rows, maps, columns)[..., :height, :width]
    got = upsample(maps, canvas, height, width)
    assert got.shape == (4, 2, height, width) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("source", "canvas", "kept"), [((17, 17), 129, (96, 128)), ((9, 5), 65, (65, 40)), ((7, 7), 7, (7, 5))]
)
def test_upsample_matches_torch_interpolate(source, canvas, kept):
    """The numpy resize against the operator it replaces (`F.interpolate`, bilinear, align_corners=False)
    on float16 maps as the shards store them: the same taps, and weights a few float32 roundings apart (PyTorch's
    compiled kernel computes the source position with its own rounding), so outputs differ by at most ~1e-6 of
    the maps' magnitude."""
    import torch
    from torch.nn import functional as F

    from icd.score_maps import upsample

    maps = np.random.default_rng(1).normal(scale=30, size=(4, 3, *source)).astype(np.float16)
    expected = F.interpolate(
        torch.from_numpy(maps.astype(np.float32)).reshape(1, 12, *source), size=(canvas, canvas), mode="bilinear"
    )[0, :, : kept[0], : kept[1]].reshape(4, 3, *kept)
    got = upsample(maps, canvas, *kept)
    assert got.dtype == np.float32 and got.shape == (4, 3, *kept)
    np.testing.assert_allclose(got, expected.numpy(), rtol=0, atol=2e-6 * float(np.abs(maps).max()))


def test_context_leakage_counts_the_context_pixels_a_seed_labels_with_the_images_class(tiny_dataset, tmp_path):
    """Recounted with PIL over the generator's context masks: a seed labelling every pixel with the image's first
    class leaks exactly that class's context pixels, the ground truth none."""
    from PIL import Image

    from icd.context_leakage import context_leakage
    from wsss.data.classes import VOC
    from wsss.data.io import write_mask

    root = Path(tiny_dataset["voc_root"])
    ids = tiny_dataset["splits"]["train_aug"]
    context, leaked = {}, {}
    for image_id in ids:
        cues = np.asarray(Image.open(root / "ContextMasks" / f"{image_id}.png"))
        first = tiny_dataset["labels"][image_id][0]
        write_mask(tmp_path / "first" / f"{image_id}.png", np.full(cues.shape, first, np.uint8))
        for c in tiny_dataset["labels"][image_id]:
            context[c] = context.get(c, 0) + int((cues == c).sum())
            leaked[c] = leaked.get(c, 0) + int((cues == c).sum()) * (c == first)
    rows = context_leakage(tiny_dataset, tmp_path, ["first"], progress=False)
    by_class = {(row["variant"], row["class"]): row for row in rows}
    assert sum(context.values()) > 0
    for c, pixels in context.items():
        if pixels:
            row = by_class[("first", VOC.names[c])]
            assert (row["context_pixels"], row["leaked_pixels"]) == (pixels, leaked[c])
            assert by_class[("gt", VOC.names[c])]["leaked_pixels"] == 0
    pooled = by_class[("first", "all")]
    assert pooled["leakage"] == pytest.approx(sum(leaked.values()) / sum(context.values()))


def test_context_leakage_reports_the_iou_with_the_leaked_pixels_given_to_the_background(tiny_dataset, tmp_path):
    """Per class and pooled, the IoU of a seed set as labelled and with its leaked context pixels set to background,
    recounted pixel by pixel with PIL and numpy (255 seeds excluded, 255 ground truth skipped)."""
    from PIL import Image

    from icd.context_leakage import context_leakage
    from wsss.data.classes import VOC

    root = Path(tiny_dataset["voc_root"])
    ids = tiny_dataset["splits"]["train_aug"]
    rng = np.random.default_rng(0)
    seeds, cleaned, truths = [], [], []
    (tmp_path / "noisy").mkdir()
    for image_id in ids:
        cues = np.asarray(Image.open(root / "ContextMasks" / f"{image_id}.png"))
        truth = np.asarray(Image.open(root / "SegmentationClassAug" / f"{image_id}.png"))
        own = tiny_dataset["labels"][image_id]
        # the truth, a random share of the context given to the image's classes and some pixels left at 255
        seed = truth.copy()
        for c in own:
            seed[(cues == c) & (rng.random(cues.shape) < 0.6)] = c
        seed[rng.random(cues.shape) < 0.1] = 255
        Image.fromarray(seed).save(tmp_path / "noisy" / f"{image_id}.png")
        fixed = seed.copy()
        for c in own:
            fixed[(cues == c) & (seed == c)] = 0
        seeds.append(seed.ravel())
        cleaned.append(fixed.ravel())
        truths.append(truth.ravel())
    seeds, cleaned, truths = np.concatenate(seeds), np.concatenate(cleaned), np.concatenate(truths)

    def iou(prediction, c):
        counted = (truths != 255) & (prediction != 255)
        inter = ((truths == c) & (prediction == c) & counted).sum()
        union = (((truths == c) | (prediction == c)) & counted).sum()
        return inter / union if union else np.nan

    present = [c for c in range(VOC.num_classes) if not np.isnan(iou(seeds, c)) or not np.isnan(iou(cleaned, c))]
    rows = {
        row["class"]: row
        for row in context_leakage(tiny_dataset, tmp_path, ["noisy"], progress=False)
        if row["variant"] == "noisy"
    }
    assert rows["all"]["leaked_pixels"] > 0
    for name, row in rows.items():
        if name == "all":
            assert row["iou"] == pytest.approx(np.nanmean([iou(seeds, c) for c in present]))
            assert row["iou_leakage_removed"] == pytest.approx(np.nanmean([iou(cleaned, c) for c in present]))
        else:
            c = VOC.names.index(name)
            assert (row["iou"], row["iou_leakage_removed"]) == pytest.approx((iou(seeds, c), iou(cleaned, c)))
    assert rows["all"]["iou_leakage_removed"] > rows["all"]["iou"]
