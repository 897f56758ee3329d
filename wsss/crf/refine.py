"""Dense-CRF refinement of seed label maps (the official ICD `_generate_seed` CRF), and a fast equivalent; the
dense CRF over any unary on wsss.crf.densecrf's engine (`crf_marginals`, DeepLab's test-time CRF).

`crf_official` is the reference: a channel per label of the dataset (VOC: 21), unary from the seed labels,
Gaussian + bilateral Potts pairwise terms, mean-field, argmax with a `max prob < min_probability -> 255` rule.
`refine_seed` gives the same labels on >= 99.5 % of pixels (99.7-100 % measured) while running the
same CRF (wsss.crf.densecrf's engine, not pydensecrf) over only the labels the seed holds plus one
channel standing for all absent classes, with the position kernel on the pixel grid instead of a
lattice; see its docstring.
"""

from __future__ import annotations

import numpy as np

from wsss.crf.densecrf import LatticeFilter, mean_field, pixel_features, spatial_filter
from wsss.crf.settings import CRFSettings, SeedCRFSettings
from wsss.data.classes import IGNORE_LABEL

__all__ = ["crf_marginals", "crf_official", "pydensecrf_marginals", "refine_seed"]

_TIE_RTOL = 1e-6  # relative gap below which the absent group and the best present label tie


def _check_inputs(image, seed, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(image)
    seed = np.asarray(seed)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be an H x W x 3 uint8 RGB array, got shape {image.shape} dtype {image.dtype} "
            f"(seed shape {seed.shape})"
        )
    if seed.ndim != 2 or seed.shape != image.shape[:2]:
        raise ValueError(
            f"seed must be an H x W label map of the image's size: image shape {image.shape}, seed shape {seed.shape}"
        )
    if not np.issubdtype(seed.dtype, np.integer):
        raise ValueError(f"seed must hold integer labels, got dtype {seed.dtype}")
    outside = (seed < 0) | (seed > IGNORE_LABEL)
    counts = np.bincount(np.where(outside, 0, seed).astype(np.uint8).ravel(), minlength=IGNORE_LABEL + 1)
    bad = np.union1d(np.unique(seed[outside]), np.flatnonzero(counts[num_classes:IGNORE_LABEL]) + num_classes)
    if bad.size:
        raise ValueError(f"seed holds labels {bad.tolist()} outside 0..{num_classes - 1} and {IGNORE_LABEL}")
    # pydensecrf needs a writeable C-contiguous buffer (PIL-backed arrays are read-only).
    return np.require(image, requirements=["C", "W"]), seed.astype(np.uint8, copy=False)


def pydensecrf_marginals(image, unary, settings: CRFSettings) -> np.ndarray:
    """pydensecrf mean-field over `unary` (M x H*W) with the Gaussian + bilateral Potts terms and iterations of
    `settings`; Q as M x H x W float32.

    The reference engine: the official seed CRF and DeepLab's post-processing CRF both run it.
    `image` must be a writeable C-contiguous H x W x 3 uint8 array (pydensecrf's requirement).
    """
    import pydensecrf.densecrf as dcrf

    h, w = image.shape[:2]
    m = unary.shape[0]
    d = dcrf.DenseCRF2D(w, h, m)
    d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    d.addPairwiseGaussian(sxy=settings.gaussian_sxy, compat=settings.gaussian_compat)
    d.addPairwiseBilateral(
        sxy=settings.bilateral_sxy, srgb=settings.bilateral_srgb, rgbim=image, compat=settings.bilateral_compat
    )
    return np.array(d.inference(int(settings.iterations)), dtype=np.float32).reshape(m, h, w)


def _kernels(image, settings: CRFSettings) -> list:
    """The position (on the pixel grid) and bilateral (lattice) kernels of `settings` for `image`, with their
    Potts weights, as wsss.crf.densecrf.mean_field takes them."""
    h, w = image.shape[:2]
    bilateral = pixel_features(h, w, settings.bilateral_sxy, image, settings.bilateral_srgb)
    return [
        (spatial_filter(h, w, settings.gaussian_sxy), settings.gaussian_compat),
        (LatticeFilter.from_features(bilateral), settings.bilateral_compat),
    ]


def crf_marginals(image, unary, settings: CRFSettings) -> np.ndarray:
    """`pydensecrf_marginals` (same arguments, same M x H x W float32 result) on wsss.crf.densecrf's engine:
    the same model and lattice, the position kernel on the pixel grid (see `refine_seed`); M >= 2 labels.

    DeepLab's test-time CRF runs it: over 21 labels it costs about half of pydensecrf's CPU (its per-label
    work is the filtering, pydensecrf's per-pixel lattice work is saved), and its labels agree with
    pydensecrf's on >= 99.9 % of pixels on DeepLab's predictions (tests/test_deeplab_infer.py, README).
    """
    h, w = image.shape[:2]
    q = mean_field(unary, _kernels(image, settings), settings.iterations)
    return q.reshape(len(q), h, w)


def crf_official(image, seed, settings: SeedCRFSettings | None = None, /, *, num_classes: int, **crf) -> np.ndarray:
    """The official seed CRF (js-fan/ICD `run_icd.py` `_generate_seed`) over all `num_classes` labels (VOC's 21;
    the official code's `num_cls + 1`).

    image: H x W x 3 uint8 RGB; seed: H x W labels 0..num_classes-1 or 255 (ignore: uniform unary); the settings
    as a SeedCRFSettings or as its fields' keywords (the config's `crf` section).
    Returns H x W uint8 labels, 255 where the largest marginal is below `min_probability`.
    """
    settings = SeedCRFSettings.resolve(settings, crf)
    image, seed = _check_inputs(image, seed, num_classes)
    h, w = seed.shape
    n = h * w
    seed_prob = float(settings.confidence)
    res_prob = (1.0 - seed_prob) / num_classes
    prob = np.full((256, n), res_prob)
    prob[seed.ravel(), np.arange(n)] = seed_prob
    prob = prob[:num_classes]
    prob /= prob.sum(axis=0, keepdims=True)
    unary = -np.log(np.maximum(prob, 1e-5))
    q = pydensecrf_marginals(image, unary, settings)
    q /= q.sum(axis=0)
    out = q.argmax(axis=0).astype(np.uint8)
    out[q.max(axis=0) < settings.min_probability] = IGNORE_LABEL
    return out


def refine_seed(image, seed, settings: SeedCRFSettings | None = None, /, *, num_classes: int, **crf) -> np.ndarray:
    """The labels of `crf_official` (same arguments) on >= 99.5 % of pixels, with the CRF run over the P
    seeded labels + 1 channel (not num_classes).

    The label reduction is exact (up to float32 rounding): in the official unary each absent class a
    (A of them) has the same value at every pixel (res_prob / column sum, clipped alike). Mean-field with Potts
    compatibility updates each label from its own unary and its own filtered marginal only,
    Q_l <- exp(-U_l + w K*Q_l) / Z, so all absent classes keep identical marginals Q_a forever;
    they matter only through Z (hence the 0.1 rule) and by winning the argmax where they are highest.
    One channel R carrying their summed mass, R = A * Q_a, reproduces them exactly if
      - its unary is U_a - log A (so exp(-U_R) = A exp(-U_a): same Z from the start), and
      - its pairwise compatibility is w / A (its message w K*(R/A) = w K*Q_a): label weight 1 / A
        in wsss.crf.densecrf.mean_field (pydensecrf's diagonal compatibility (-w, ..., -w, -w/A)).
    Afterwards Q_a = R / A is compared with the present labels as numpy's argmax over 21 would:
    the lowest absent index wins if Q_a beats the best present label, or ties it from a lower index.
    Background is grouped with the absent classes when no pixel is seeded 0: its official marginal
    is then bit-identical to theirs, and keeping it in the group makes numpy's tie-break (0 wins)
    exact instead of depending on float rounding between two channels.
    The one approximation is the position ("Gaussian") kernel: a Gaussian of std sxy on the pixel grid
    where pydensecrf uses a permutohedral lattice (see wsss.crf.densecrf: the same std, a slightly
    different kernel), which moves labels on 0-0.3 % of pixels (tests/test_crf.py).
    Cost: pydensecrf's per-pixel work barely depends on the label count (3-5 channels through it
    were only 2-3x faster than 21). wsss.crf.densecrf builds the bilateral lattice and filters both
    kernels in compiled code (numba), the position kernel on the grid, P channels per iteration (the
    group's follows from sum Q = 1): 13-14x less CPU than `crf_official` on 500 x 375 images with
    config.yaml's CRF (10-11x with the VOC values, sxy 3 and bilateral 80, whose official lattices are
    cheaper), idle or with the other core busy (benchmarks/crf.py).
    """
    settings = SeedCRFSettings.resolve(settings, crf)
    image, seed = _check_inputs(image, seed, num_classes)
    h, w = seed.shape
    n = h * w
    flat = seed.ravel()
    labelled = flat != IGNORE_LABEL
    present = np.flatnonzero(np.bincount(flat, minlength=IGNORE_LABEL + 1)[:num_classes])
    absent = np.setdiff1d(np.arange(num_classes), present)  # background joins them if unseeded
    p, a = present.size, absent.size

    # The official energies -log(max(prob / column sum, 1e-5)) take three values; only needed rows.
    seed_prob = float(settings.confidence)
    res_prob = (1.0 - seed_prob) / num_classes
    seeded_sum, ignored_sum = seed_prob + (num_classes - 1) * res_prob, num_classes * res_prob
    seeded, other, ignored = (
        -np.log(max(prob / total, 1e-5))
        for prob, total in ((seed_prob, seeded_sum), (res_prob, seeded_sum), (res_prob, ignored_sum))
    )
    rows = p + (a > 0)
    unary = np.empty((rows, n), dtype=np.float32)
    unary[:] = np.where(labelled, np.float32(other), np.float32(ignored))
    lookup = np.full(IGNORE_LABEL + 1, -1, dtype=np.int64)
    lookup[present] = np.arange(p)
    unary[lookup[flat[labelled]], np.flatnonzero(labelled)] = seeded
    if a:
        unary[p] -= np.float32(np.log(a))
    group = [1.0] * p + ([1.0 / a] if a else [])  # the absent group's compatibility is w / A

    if rows == 1:  # an all-255 seed: one channel, Q = 1 (every official marginal is 1/num_classes)
        q = np.ones((1, h, w), dtype=np.float32)
    else:
        q = mean_field(unary, _kernels(image, settings), settings.iterations, label_weights=group).reshape(rows, h, w)
    if p:  # argmax over the present labels, the first on ties (numpy's argmax along axis 0 is slow)
        best, best_q = np.zeros((h, w), dtype=np.intp), q[0].copy()
        for index in range(1, p):
            best[q[index] > best_q] = index
            np.maximum(best_q, q[index], out=best_q)
        out = present.astype(np.uint8)[best]
    else:  # an all-255 seed: every label ties, as in the official call
        best_q = np.full((h, w), -np.inf, dtype=np.float32)
        out = np.zeros((h, w), dtype=np.uint8)
    if a:
        q_absent = q[p] / np.float32(a)
        first_absent = int(absent[0])
        # Where a present label got no more support than the absent ones, the official marginals tie
        # bit for bit; here R / A carries float32 rounding, so equality is judged to a few ulps.
        tie = np.abs(q_absent - best_q) <= _TIE_RTOL * best_q
        wins = ((q_absent > best_q) & ~tie) | (tie & (first_absent < out))
        out[wins] = first_absent
        best_q = np.maximum(best_q, q_absent)
    out[best_q < settings.min_probability] = IGNORE_LABEL
    return out
