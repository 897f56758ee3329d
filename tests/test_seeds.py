"""Seed generation against a pixel-by-pixel re-implementation of the official `_generate_seed`."""

from __future__ import annotations

import numpy as np
import pytest

from icd.seeds import cam_seed, icd_seed, saliency_seed


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
    assert np.array_equal(icd_seed(scores, classes, cam, threshold=threshold), reference_seed(scores, classes, cam, threshold))


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


def test_saliency_replaces_the_background():
    scores = np.array([[[1.0, -1.0, -1.0, 1.0]]])
    cam = np.ones_like(scores)
    saliency = np.array([[0.9, 0.0, 0.5, 0.0]])
    # fg from ICD; bg only where saliency < 0.01; ICD background with saliency becomes 255.
    assert saliency_seed(scores, [3], cam, saliency).tolist() == [[3, 0, 255, 0]]
    # A failed saliency map (salient area < 1 %) only keeps the background ICD agrees on.
    empty = np.zeros((1, 4))
    assert saliency_seed(scores, [3], cam, empty).tolist() == [[3, 0, 0, 3]]


def test_cam_seed_against_a_background_threshold():
    cam = np.array([[[4.0, 1.0, 0.0]], [[0.0, 3.0, -1.0]]])
    assert cam_seed(cam, [5, 9], background_threshold=0.2).tolist() == [[5, 9, 0]]
    assert cam_seed(cam, [5, 9], background_threshold=0.5).tolist() == [[5, 9, 0]]
    assert cam_seed(cam, [5, 9], background_threshold=1.0).tolist() == [[0, 0, 0]]


def test_ablation_rows_come_from_the_network_without_top_down():
    """Table 3: bottom-up and refined seeds from the ablation network's maps and CAM; the rest from the full one."""
    from icd.config import load_config
    from icd.seeds import image_seeds

    rng = np.random.default_rng(0)
    classes = [4, 15]
    full, ablation = rng.normal(size=(2, 4, 2, 12, 16))
    image = rng.integers(0, 256, size=(12, 16, 3), dtype=np.uint8)
    options = {"threshold": 0.0, "cam_background": 0.3, "crf": load_config()["crf"]}
    seeds = image_seeds(image, full, classes, ablation_scores=ablation, **options)
    assert np.array_equal(seeds["icd_bottom_up"], icd_seed(ablation[1], classes, ablation[0]))
    assert np.array_equal(seeds["icd_refined"], icd_seed(ablation[2], classes, ablation[0]))
    assert np.array_equal(seeds["icd"], icd_seed(full[3], classes, full[0]))
    assert np.array_equal(seeds["cam"], cam_seed(full[0], classes, background_threshold=0.3))
    # Without an ablation network every row comes from the full one; the two choices differ here.
    alone = image_seeds(image, full, classes, **options)
    assert np.array_equal(alone["icd_bottom_up"], icd_seed(full[1], classes, full[0]))
    assert not np.array_equal(alone["icd_bottom_up"], seeds["icd_bottom_up"])
    assert all(np.array_equal(alone[name], seeds[name]) for name in ("cam", "icd", "icd_crf"))


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
    from icd.scores import upsample

    rng = np.random.default_rng(0)
    maps = rng.normal(size=(4, 2, 6, 9))  # non-square: a swapped axis shows
    canvas, height, width = 41, 30, 21
    rows, columns = half_pixel_bilinear_weights(6, canvas), half_pixel_bilinear_weights(9, canvas)
    expected = np.einsum("yh,abhw,xw->abyx", rows, maps, columns)[..., :height, :width]
    got = upsample(maps, canvas, height, width)
    assert got.shape == (4, 2, height, width) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
