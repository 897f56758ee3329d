"""The reduced seed CRF (`refine_seed`) against the official 21-label call (`crf_official`)."""

from __future__ import annotations

import numpy as np
import pytest

from icd.crf import crf_official, refine_seed
from icd.data.classes import IGNORE_LABEL

PARAMS = dict(confidence=0.5, gaussian_sxy=3, gaussian_compat=3, bilateral_sxy=80, bilateral_srgb=13,
              bilateral_compat=10, iterations=10, min_probability=0.1)
H, W = 72, 96


def blocks(rng: np.random.Generator, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A GT of rectangles (background 0 around them) and an image of noisy per-label colours."""
    gt = np.zeros((H, W), dtype=np.uint8)
    for label in labels:
        y, x = rng.integers(0, H // 2), rng.integers(0, W // 2)
        gt[y:y + rng.integers(H // 4, H // 2), x:x + rng.integers(W // 4, W // 2)] = label
    colours = rng.integers(0, 256, size=(256, 3))
    image = np.clip(colours[gt] + rng.normal(0, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    return image, gt


def seed_from(rng: np.random.Generator, gt: np.ndarray, ignore: float) -> np.ndarray:
    """The GT with a 255 band across it and a fraction `ignore` of speckled 255."""
    seed = gt.copy()
    y = int(rng.integers(0, H - 12))
    seed[y:y + 10] = IGNORE_LABEL
    seed[rng.random(gt.shape) < ignore] = IGNORE_LABEL
    return seed


def agreement(image, seed, **overrides) -> tuple[float, np.ndarray, np.ndarray]:
    params = {**PARAMS, **overrides}
    official = crf_official(image, seed, **params)
    reduced = refine_seed(image, seed, **params)
    return float((official == reduced).mean()), official, reduced


@pytest.mark.parametrize(
    ("labels", "ignore"),
    [([7], 0.2), ([3, 12, 15], 0.2), ([1, 20], 0.85)],
    ids=["one-class", "three-classes", "mostly-ignore"],
)
def test_reduced_matches_official(labels, ignore):
    rng = np.random.default_rng(sum(labels))
    image, gt = blocks(rng, labels)
    seed = seed_from(rng, gt, ignore)
    match, official, reduced = agreement(image, seed)
    assert match >= 0.995
    allowed = set(np.unique(seed).tolist()) | {0, IGNORE_LABEL}
    assert set(np.unique(reduced).tolist()) <= allowed
    assert set(np.unique(official).tolist()) <= allowed
    assert reduced.dtype == np.uint8 and reduced.shape == seed.shape


def test_no_background_seed_no_threshold():
    """Background unseeded (it joins the absent group) and no 0.1 rule: labels follow the official argmax."""
    rng = np.random.default_rng(5)
    image, gt = blocks(rng, [9])
    seed = np.full_like(gt, IGNORE_LABEL)
    seed[(gt == 9) & (rng.random(gt.shape) < 0.3)] = 9
    match, official, reduced = agreement(image, seed, min_probability=0.0)
    assert match >= 0.995
    assert set(np.unique(reduced).tolist()) <= {0, 9}


def test_all_ignore_seed():
    rng = np.random.default_rng(1)
    image, _ = blocks(rng, [2])
    seed = np.full((H, W), IGNORE_LABEL, dtype=np.uint8)
    for threshold, expected in ((0.1, IGNORE_LABEL), (0.0, 0)):
        match, official, reduced = agreement(image, seed, min_probability=threshold)
        assert match == 1.0
        assert (reduced == expected).all()


def test_bad_shapes_name_both():
    image = np.zeros((H, W, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"\(72, 96, 3\).*\(72, 95\)"):
        refine_seed(image, np.zeros((H, W - 1), dtype=np.uint8), **PARAMS)
    with pytest.raises(ValueError, match=r"\(72, 96\).*\(72, 96\)"):
        crf_official(np.zeros((H, W), dtype=np.uint8), np.zeros((H, W), dtype=np.uint8), **PARAMS)
    with pytest.raises(ValueError, match="outside"):
        refine_seed(image, np.full((H, W), 30, dtype=np.uint8), **PARAMS)
