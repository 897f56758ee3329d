"""ICD losses against explicit-loop numpy references of the official operators' backward passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icd.losses import (
    bottom_up_loss,
    icd_losses,
    normalise_target,
    top_down_loss,
    warmup_weight,
)
from icd.model import bottom_up_scores
from wsss.core.errors import ConfigError
from wsss.training import cam_loss

SCALE = 10.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bce(logit, target):
    return -(target * np.log(sigmoid(logit)) + (1 - target) * np.log(1 - sigmoid(logit)))


def random_case(seed=0, batch=4, classes=3, channels=5, height=4, width=6):
    """Features B x D x h x w, directions C x D, labels with single-, multi- and zero-class images."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(batch, channels, height, width))
    directions = rng.normal(size=(classes, channels)) * 0.3
    labels = np.zeros((batch, classes))
    labels[0, 1] = 1  # single class
    labels[1, [0, 2]] = 1  # two classes: ignored by the bottom-up loss
    labels[2, 2] = 1  # single class
    # image 3 has no class
    return features, directions, labels


def numpy_bottom_up_loss(features, directions, labels, variant, scale):
    batch, _, height, width = features.shape
    total = 0.0
    for n in range(batch):
        if labels[n].sum() != 1:
            continue
        for c in range(directions.shape[0]):
            if not labels[n, c]:
                continue
            w = directions[c] / np.linalg.norm(directions[c])
            acc = 0.0
            for i in range(height):
                for j in range(width):
                    s = float(w @ features[n, :, i, j])
                    if variant == "l2":
                        acc += -0.5 * s * s
                    elif variant == "abs":
                        acc += -abs(s)
                    else:
                        acc += bce(s, float(s > 0))
            total += scale * acc / (height * width)
    return total / batch


def torch_bottom_up(features, directions, labels, variant, scale=SCALE):
    f = torch.tensor(features, requires_grad=True)
    w = torch.tensor(directions, requires_grad=True)
    loss = bottom_up_loss(bottom_up_scores(f, w), torch.tensor(labels), variant, scale)
    return loss, f, w


@pytest.mark.parametrize("variant", ["l2", "abs", "sig"])
def test_bottom_up_loss_value_matches_numpy(variant):
    features, directions, labels = random_case()
    loss, _, _ = torch_bottom_up(features, directions, labels, variant)
    expected = numpy_bottom_up_loss(features, directions, labels, variant, SCALE)
    assert loss.item() == pytest.approx(expected, rel=1e-10)


def test_bottom_up_l2_gradient_matches_the_official_backward():
    """Official: g = -(scale/(h w)) sum_n sum_k y' (w^T f) f wrt the normalised w, then / N, then
    through the L2 normalisation's Jacobian (I/|w| - w w^T/|w|^3)."""
    features, directions, labels = random_case(seed=1)
    batch, channels, height, width = features.shape
    loss, _, w = torch_bottom_up(features, directions, labels, "l2")
    loss.backward()
    expected = np.zeros_like(directions)
    for c in range(directions.shape[0]):
        norm = np.linalg.norm(directions[c])
        unit = directions[c] / norm
        g = np.zeros(channels)
        for n in range(batch):
            if labels[n].sum() == 1 and labels[n, c]:
                for i in range(height):
                    for j in range(width):
                        f = features[n, :, i, j]
                        g += -(SCALE / (height * width)) * (unit @ f) * f
        g /= batch
        expected[c] = g / norm - directions[c] * (directions[c] @ g) / norm**3
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", ["abs", "sig"])
def test_bottom_up_gradient_matches_finite_differences(variant):
    features, directions, labels = random_case(seed=2)
    loss, _, w = torch_bottom_up(features, directions, labels, variant)
    loss.backward()
    eps = 1e-6
    numeric = np.zeros_like(directions)
    for index in np.ndindex(directions.shape):
        up, down = directions.copy(), directions.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (
            numpy_bottom_up_loss(features, up, labels, variant, SCALE)
            - numpy_bottom_up_loss(features, down, labels, variant, SCALE)
        ) / (2 * eps)
    np.testing.assert_allclose(w.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("variant", ["l2", "abs", "sig"])
def test_bottom_up_loss_trains_the_directions_only(variant):
    features, directions, labels = random_case(seed=3)
    loss, f, w = torch_bottom_up(features, directions, labels, variant)
    loss.backward()
    assert f.grad is None
    assert w.grad is not None and w.grad.abs().sum() > 0


def test_multi_class_and_empty_images_do_not_contribute():
    features, directions, labels = random_case(seed=4)
    loss, _, _ = torch_bottom_up(features, directions, labels, "l2")
    changed = features.copy()
    changed[1] = np.random.default_rng(9).normal(size=changed[1].shape) * 5  # two-class image
    changed[3] += 7.0  # no-class image
    loss_changed, _, _ = torch_bottom_up(changed, directions, labels, "l2")
    assert loss_changed.item() == loss.item()
    changed[0] *= 2.0  # single-class image: does count
    loss_single, _, _ = torch_bottom_up(changed, directions, labels, "l2")
    assert loss_single.item() != pytest.approx(loss.item())


def test_bottom_up_rejects_unknown_variant():
    with pytest.raises(ConfigError, match="bottom_up_loss"):
        bottom_up_loss(torch.zeros(1, 2, 3, 3), torch.tensor([[1.0, 0.0]]), "l3", SCALE)


def test_cam_loss_sums_over_classes_and_averages_over_images():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 4)) * 2
    labels = (rng.random((3, 4)) > 0.5).astype(float)
    expected = sum(bce(logits[n, c], labels[n, c]) for n in range(3) for c in range(4)) / 3
    assert cam_loss(torch.tensor(logits), torch.tensor(labels)).item() == pytest.approx(expected, rel=1e-10)


def numpy_normalise(scores):
    out = np.zeros_like(scores)
    batch, classes, height, width = scores.shape
    for n in range(batch):
        for c in range(classes):
            top = max(scores[n, c].max(), 1e-5)
            bottom = -min(scores[n, c].min(), -1e-5)
            for i in range(height):
                for j in range(width):
                    s = scores[n, c, i, j]
                    out[n, c, i, j] = max(s, 0) / top + min(s, 0) / bottom
    return out


def test_normalise_target_matches_numpy_including_one_signed_maps():
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(2, 3, 4, 5))
    scores[0, 1] = np.abs(scores[0, 1])  # all positive
    scores[1, 2] = -np.abs(scores[1, 2])  # all negative
    scores[1, 0] = 0.0  # all zero
    normalised = normalise_target(torch.tensor(scores)).numpy()
    np.testing.assert_allclose(normalised, numpy_normalise(scores), rtol=1e-12)
    assert normalised.max() == pytest.approx(1.0) and normalised.min() == pytest.approx(-1.0)


def test_top_down_loss_matches_numpy_with_mask_and_present_classes():
    rng = np.random.default_rng(7)
    batch, classes, height, width = 3, 4, 5, 6
    adapted = rng.normal(size=(batch, classes, height, width)) * 2
    target_scores = rng.normal(size=(batch, classes, height, width))
    labels = np.array([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=float)
    threshold = 0.2
    normalised = numpy_normalise(target_scores)
    expected = 0.0
    for n in range(batch):
        for c in range(classes):
            if not labels[n, c]:
                continue
            for i in range(height):
                for j in range(width):
                    if abs(normalised[n, c, i, j]) > threshold:
                        expected += bce(adapted[n, c, i, j], float(normalised[n, c, i, j] > 0)) / (height * width)
    expected /= batch
    a = torch.tensor(adapted, requires_grad=True)
    t = torch.tensor(target_scores, requires_grad=True)
    loss = top_down_loss(a, t, torch.tensor(labels), threshold)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    loss.backward()
    assert t.grad is None  # the target is never differentiated
    # Official gradient: (sigmoid(S'') - target) * label * mask / (h w), then / N.
    grad = (sigmoid(adapted) - (normalised > 0)) * labels[:, :, None, None] * (np.abs(normalised) > threshold)
    np.testing.assert_allclose(a.grad.numpy(), grad / (height * width * batch), rtol=1e-9, atol=1e-15)


def test_warmup_curve():
    total = 100
    assert warmup_weight(0, total) == pytest.approx(math.exp(-10))
    assert warmup_weight(total // 2, total) == pytest.approx(math.exp(-5))
    assert warmup_weight(total, total) == 1.0
    assert warmup_weight(10 * total, total) == 1.0
    curve = [warmup_weight(i, total) for i in range(total + 5)]
    assert all(curve[i] < curve[i + 1] for i in range(total))
    assert warmup_weight(0, 0) == 1.0


def test_icd_losses_combines_and_falls_back_to_unrefined_target():
    rng = np.random.default_rng(8)
    shape = (2, 3, 4, 5)
    labels = torch.tensor([[1.0, 0, 0], [0, 1, 1]], dtype=torch.float64)
    outputs = {
        "class_logits": torch.tensor(rng.normal(size=(2, 3))),
        "bottom_up_raw": torch.tensor(rng.normal(size=shape)),
        "bottom_up": torch.tensor(rng.normal(size=shape)),
        "refined": torch.tensor(rng.normal(size=shape)),
        "adapted": torch.tensor(rng.normal(size=shape)),
    }
    losses = icd_losses(outputs, labels, variant="abs", scale=3.0, threshold=0.3, top_down_weight=0.25)
    assert losses["cam"].item() == pytest.approx(cam_loss(outputs["class_logits"], labels).item())
    expected_bottom_up = bottom_up_loss(outputs["bottom_up_raw"], labels, "abs", 3.0).item()
    assert losses["bottom_up"].item() == pytest.approx(expected_bottom_up)
    refined_td = top_down_loss(outputs["adapted"], outputs["refined"], labels, 0.3).item()
    assert losses["top_down"].item() == pytest.approx(refined_td)
    expected_total = losses["cam"].item() + losses["bottom_up"].item() + 0.25 * refined_td
    assert losses["total"].item() == pytest.approx(expected_total)

    unrefined = icd_losses({**outputs, "refined": None}, labels, threshold=0.3)
    unrefined_td = top_down_loss(outputs["adapted"], outputs["bottom_up"], labels, 0.3).item()
    assert unrefined["top_down"].item() == pytest.approx(unrefined_td)
    no_top_down = icd_losses({**outputs, "adapted": None}, labels)
    assert no_top_down["top_down"].item() == 0.0
    assert no_top_down["total"].item() == pytest.approx(no_top_down["cam"].item() + no_top_down["bottom_up"].item())
