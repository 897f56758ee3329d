"""ICD training losses (Eq. 1, 7, 8, 10, 13) with the official code's scales.

The official MXNet operators define their losses by their backward passes, and the optimiser
divides every gradient by the batch size N (`rescale_grad = 1/N`). Each loss here is the function
whose autograd gradient equals that: B = N images, C classes, maps B x C x h x w, labels B x C.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from wsss.core.errors import ConfigError
from wsss.training import cam_loss

BOTTOM_UP_VARIANTS = ("l2", "abs", "sig")


def bottom_up_loss(
    raw_scores: torch.Tensor, labels: torch.Tensor, variant: str = "l2", scale: float = 10.0
) -> torch.Tensor:
    """Bottom-up loss on Ŝ (whose features are detached, so only the directions learn).

    Only images with exactly one class count (`ICD_BottomUp` masks the label by its sum); the
    others still count in N. Per (image, present class) the pixel mean of
      l2  (Eq. 1):  -(scale / 2) Ŝ²  (official gradient: -scale/(h w) Σ Ŝ f),
      abs (Eq. 8):  -scale |Ŝ|,
      sig (Eq. 10): scale * BCE(Ŝ, Ŝ > 0), the pseudo-label not differentiated,
    summed over classes and divided by N.
    """
    single = (labels.sum(1, keepdim=True) == 1).to(raw_scores.dtype)
    weights = labels.to(raw_scores.dtype) * single  # B x C
    if variant == "l2":
        per_pixel = -0.5 * raw_scores.square()
    elif variant == "abs":
        per_pixel = -raw_scores.abs()
    elif variant == "sig":
        pseudo = (raw_scores > 0).to(raw_scores.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(raw_scores, pseudo, reduction="none")
    else:
        raise ConfigError(f"icd.bottom_up_loss must be one of {BOTTOM_UP_VARIANTS}, got {variant!r}")
    return scale * (per_pixel.mean((2, 3)) * weights).sum() / raw_scores.shape[0]


def normalise_target(scores: torch.Tensor) -> torch.Tensor:
    """n in [-1, 1]: positive part / its max, negative part / |its min|, per image and class.

    `max(s, 0) / max(max s, 1e-5) + min(s, 0) / (-min(min s, -1e-5))` over the h x w pixels, as
    `ICD_TopDown`'s backward: B x C x h x w -> B x C x h x w.
    """
    top = scores.amax((2, 3), keepdim=True).clamp(min=1e-5)
    bottom = -scores.amin((2, 3), keepdim=True).clamp(max=-1e-5)
    return scores.clamp(min=0) / top + scores.clamp(max=0) / bottom


def top_down_loss(
    adapted: torch.Tensor, target_scores: torch.Tensor, labels: torch.Tensor, threshold: float = 0.2
) -> torch.Tensor:
    """Eq. 7 as `ICD_TopDown`: BCE of S'' against B = (n > 0) where |n| > threshold.

    n = `normalise_target(target_scores)` (S', or S without refinement; never differentiated).
    Summed over present classes and pixels, divided by h*w and by N (all images count).
    """
    normalised = normalise_target(target_scores.detach())
    mask = (normalised.abs() > threshold).to(adapted.dtype)
    target = (normalised > 0).to(adapted.dtype)
    bce = F.binary_cross_entropy_with_logits(adapted, target, reduction="none")
    per_class = (bce * mask).mean((2, 3))  # B x C: sum over pixels / (h * w)
    return (per_class * labels.to(adapted.dtype)).sum() / adapted.shape[0]


def warmup_weight(iteration: int, warmup_iterations: int) -> float:
    """exp(-10 * remaining / W), remaining = max(W - iteration, 0): exp(-10) at 0, 1 from W on.

    The official `ICD_TopDown` counts W = 2 epochs of iterations down to 0, one per backward.
    """
    if warmup_iterations <= 0:
        return 1.0
    remaining = max(warmup_iterations - iteration, 0)
    return math.exp(-10.0 * remaining / warmup_iterations)


def icd_losses(
    outputs: dict,
    labels: torch.Tensor,
    *,
    variant: str = "l2",
    scale: float = 10.0,
    threshold: float = 0.2,
    top_down_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Eq. 13 from `ICDNet.forward` outputs: keys cam, bottom_up, top_down, total.

    `top_down` is the unweighted top-down loss (0 without the branch); `total` adds it times
    `top_down_weight` (the warm-up weight, 0 before the top-down loss starts). The top-down target
    is the refined S' when present, else S.
    """
    losses = {
        "cam": cam_loss(outputs["class_logits"], labels),
        "bottom_up": bottom_up_loss(outputs["bottom_up_raw"], labels, variant, scale),
    }
    adapted = outputs.get("adapted")
    if adapted is None:
        losses["top_down"] = losses["cam"].new_zeros(())
    else:
        target = outputs["refined"] if outputs.get("refined") is not None else outputs["bottom_up"]
        losses["top_down"] = top_down_loss(adapted, target, labels, threshold)
    losses["total"] = losses["cam"] + losses["bottom_up"] + top_down_weight * losses["top_down"]
    return losses
