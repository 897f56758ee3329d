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
