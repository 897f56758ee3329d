"""W-OoD's ingredients (Lee et al., CVPR 2022, naver-ai/w-ood `step/train_cam_clustering.py`) on ICD's CAM branch.

Out-of-distribution images hold none of the classes but do hold their spurious context (water without a boat):
classified as "no class", they teach the CAM branch not to fire on that context. The official code adds two
losses to its classifier's BCE, both kept here in its constants' units:

- the OoD classification loss (`ood_classification_loss`): BCE of the OoD images' logits against all-zero labels,
  after one gradient step that makes the images *more* foreground-like (`climb`); weight 0.25, images whose top
  class is excluded (the official code drops `bottle`; here a configurable list, empty by default) masked out;
- the distance loss (`distance_loss`): the pooled feature the classifier classifies is pulled to the prototypes
  of its image's classes and pushed from the nearest 20 % of the k-means centres of OoD features.

Prototypes come from a trained network once (`compute_prototypes`), as the official code computes them from its
pretrained classifier: here from the ICD network at `icd.ood.start_epoch`, after which both losses are on.
The OoD images pass through the CAM branch only, in forwards of their own with BatchNorm frozen: they enter
neither the bottom-up loss nor the sign-flip statistics nor any BatchNorm statistics (see
../shared/reference/wood-notes.md, "Adapting to ICD").
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.nn import functional as F

from icd.model import bottom_up_scores, pooled_class_feature

KMEANS_ITERATIONS = 10  # the official Lloyd iterations


@contextlib.contextmanager
def frozen_batch_norm(net: nn.Module):
    """Every BatchNorm of `net` in eval mode (running statistics, no update) for the forwards inside; dropout keeps
    its mode. W-OoD's network has frozen BatchNorm; ICD's learns it, so OoD images must not reach it."""
    layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer in layers:
            layer.train()


def _all_background(scores: torch.Tensor, id_batch_size: int) -> torch.Tensor:
    """BCE of B x C x h x w scores against 0 (softplus), per class the mean over pixels, averaged over classes,
    summed over images and divided by the ID batch size: one class's worth of an ICD loss per OoD image."""
    return F.softplus(scores).mean((1, 2, 3)).sum() / id_batch_size


def background_top_down_loss(net, features: dict[str, torch.Tensor], id_batch_size: int) -> torch.Tensor:
    """This project's extension, not W-OoD's: the top-down branch's adapted scores S'' of OoD images trained as
    background everywhere, for every class. W-OoD's losses reach only the CAM branch, while ICD's seeds come from
    S''. The ICD BatchNorm is frozen by the caller."""
    return _all_background(net._top_down(net.feature_bn(net._bottom_up_input(features))), id_batch_size)


def background_bottom_up_loss(net, features: dict[str, torch.Tensor], id_batch_size: int) -> torch.Tensor:
    """This project's extension, not W-OoD's: the bottom-up scores S (Ŝ oriented by the sign flip, which this
    reads and never updates) of OoD images trained as background everywhere, for every class. As the bottom-up
    loss, it moves only the directions (icd.model.bottom_up_scores detaches the features): a class's direction
    turns away from its context when that context alone scores as the class. S' and hence the top-down targets
    follow. The ICD BatchNorm is frozen by the caller."""
    raw = bottom_up_scores(net.feature_bn(net._bottom_up_input(features)), net.directions)
    return _all_background(net.sign_flip(raw), id_batch_size)


def class_logits(net, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The CAM branch alone (backbone, fc8, GAP): (B x C logits, backbone features)."""
    features = net.backbone(images)
    return net.fc8(features["fc7"]).mean((2, 3)), features


def climb(net, images: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    """W-OoD's one-step input ascent on sum_b max_c logit (`tcc.py`'s adversarial climb, `train_utils` step):
    x + step * g / max|g|, clipped to the batch's value range; max|g| and the range over the whole batch tensor.
    `step` (1 x 3 x 1 x 1) is per channel in input units (0.07 of torchvision's units: ~4 grey levels). No
    parameter gradient is kept."""
    images = images.detach().requires_grad_(True)
    with frozen_batch_norm(net):
        logits, _ = class_logits(net, images)
    (gradient,) = torch.autograd.grad(logits.max(1).values.sum(), images)
    climbed = images + step * gradient / gradient.abs().max().clamp_min(1e-12)
    return climbed.clamp(images.min(), images.max()).detach()


def ood_classification_loss(logits: torch.Tensor, excluded: torch.Tensor, id_batch_size: int) -> torch.Tensor:
    """BCE of OoD logits (B' x C) against all-zero labels, summed over classes (ICD's BCE units: the official 0.25 is
    relative to a BCE averaged over classes, so both are summed here), over the images whose arg-max class is not
    `excluded` (a C bool mask), divided by the ID batch size as the official code does."""
    keep = ~excluded[logits.argmax(1)]
    return (F.softplus(logits).sum(1) * keep.to(logits.dtype)).sum() / id_batch_size


def distance_loss(
    features: torch.Tensor, labels: torch.Tensor, class_prototypes: torch.Tensor, ood_centres: torch.Tensor, push: float
) -> torch.Tensor:
    """W-OoD's L_M on pooled features (B x D) of the ID batch, labels B x C multi-hot:

    [ sum_b sum_{c in Y_b} d(f_b, mu_c) - sum over the pairs (b, k) with d(f_b, nu_k) < tau of d(f_b, nu_k) ] / (B K)

    with Euclidean d, tau the floor((1 - push) n)-th largest of the n nonzero ID-to-centre distances of the batch
    (the nearest `push` fraction are pushed), tau and the selection carrying no gradient (`tcc.py` L_M)."""
    batch, clusters = features.shape[0], ood_centres.shape[0]
    to_classes = torch.cdist(features, class_prototypes)
    pull = (to_classes * labels.to(features.dtype)).sum()
    to_centres = torch.cdist(features, ood_centres).flatten()
    nonzero = to_centres.detach()[to_centres.detach() > 0]
    if nonzero.numel() == 0:
        return pull / (batch * clusters)
    rank = max(1, math.floor((1.0 - push) * nonzero.numel()))
    tau = torch.topk(nonzero, rank).values[-1]
    pushed = to_centres[to_centres.detach() < tau].sum()
    return (pull - pushed) / (batch * clusters)


def kmeans(points: torch.Tensor, clusters: int, seed: int) -> torch.Tensor:
    """Euclidean Lloyd k-means (KMEANS_ITERATIONS, as the official code) with k-means++ seeding drawn from `seed`
    (the official code seeds with the first K points in list order; here the result does not depend on the list's
    order beyond the draw). Returns the non-empty clusters' means (K' x D, K' <= clusters): an empty cluster is
    dropped, as the official code ignores its zero vector."""
    points = points.double()
    generator = torch.Generator().manual_seed(seed)
    count = min(clusters, points.shape[0])
    first = int(torch.randint(points.shape[0], (1,), generator=generator))
    centres = [points[first]]
    nearest = ((points - centres[0]) ** 2).sum(1)
    for _ in range(1, count):
        chosen = int(torch.multinomial(nearest.clamp_min(0) + 1e-30, 1, generator=generator))
        centres.append(points[chosen])
        nearest = torch.minimum(nearest, ((points - points[chosen]) ** 2).sum(1))
    centres = torch.stack(centres)
    for _ in range(KMEANS_ITERATIONS):
        assignment = torch.cdist(points, centres).argmin(1)
        members = [points[assignment == k] for k in range(centres.shape[0])]
        centres = torch.stack([m.mean(0) if len(m) else centres[k] for k, m in enumerate(members)])
    assignment = torch.cdist(points, centres).argmin(1)
    kept = [points[assignment == k].mean(0) for k in range(centres.shape[0]) if (assignment == k).any()]
    return torch.stack(kept).float()


def class_prototypes(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """mu_c: the mean pooled feature of the images whose labels hold class c (a multi-class image counts for each of
    its classes), C x D; a class without images gets a zero vector and, having no image, is never pulled to."""
    weights = labels.double()
    return (weights.T @ features.double() / weights.sum(0).clamp_min(1)[:, None]).float()


@torch.no_grad()
def compute_prototypes(net, id_images, id_labels: torch.Tensor, ood_images, *, clusters: int, seed: int) -> dict:
    """W-OoD's prototypes from the network as it is (`get_sample_estimator`): the class prototypes of the pooled
    features of `id_images` (an iterable of 1 x 3 x H x W network inputs, one per row of `id_labels`) and the k-means
    centres of those of `ood_images`, each image forwarded whole in eval mode (no dropout, running statistics)."""
    was_training = net.training
    net.eval()
    try:
        id_features = torch.cat([pooled_class_feature(net.backbone(image)) for image in id_images])
        ood_features = torch.cat([pooled_class_feature(net.backbone(image)) for image in ood_images])
    finally:
        net.train(was_training)
    return {
        "classes": class_prototypes(id_features.cpu(), id_labels),
        "ood": kmeans(ood_features.cpu(), clusters, seed),
    }
