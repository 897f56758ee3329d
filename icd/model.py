"""The ICD network: CAM branch, bottom-up directions, sign flip, superpixel refinement, top-down.

A PyTorch re-implementation of the official MXNet code (js-fan/ICD, `run_icd.py` and
`core/model/layers_custom/icd.py`). Shapes: B images, C classes, (H, W) input, (h, w) = stride-8
feature resolution, K superpixels, D feature channels. The official custom operators map to:

- `ICD_BottomUp`  -> `bottom_up_scores` (forward) + `icd.losses.bottom_up_loss` (its backward);
- `AccumResign`   -> `SignFlip`;
- `SPRefine`      -> `refine_with_superpixels`;
- `ICD_TopDown`   -> `ICDNet._top_down` (logits) + `icd.losses.top_down_loss` (its backward).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from wsss.core.errors import ConfigError
from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights

BOTTOM_UP_FEATURES: dict[str, tuple[str, ...]] = {
    "conv4": ("conv4",),
    "conv5": ("conv5",),
    "fc6": ("fc6",),
    "concat": ("conv4", "conv5", "fc6"),
}
TOP_DOWN_STRUCTURES = ("a", "b", "c", "d")
NEW_LAYER_STD = 0.01  # "New layers are initialized by Normal distribution with a standard deviation 0.01"


def bottom_up_scores(features: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """Raw ICD score Ŝ = w_c^T f (Eq. 2-3): B x D x h x w features, C x D directions -> B x C x h x w.

    Rows of `directions` are L2-normalised here, so their scale never matters. The features are
    detached: the official `ICD_BottomUp` backward writes a zero gradient into its data input, so
    the bottom-up loss trains the directions only. The normalisation's Jacobian comes from
    autograd; the official backward wrote it by hand with a 1e-5 added to the norms.
    """
    weight = F.normalize(directions, dim=1)
    return F.conv2d(features.detach(), weight[:, :, None, None])


def pooled_class_feature(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """The vector the CAM branch classifies, pooled: GAP of fc7 after ReLU, before dropout (B x D). W-OoD takes
    GAP of the stage the classifier reads; dropout's zeros would inflate its distances in training only."""
    return features["fc7_activation"].mean((2, 3))


class SignFlip(nn.Module):
    """Orients Ŝ so that positive means foreground (Eq. 4-5), as the official `AccumResign`.

    `stored` (C x 2) is an EMA over training batches of the mean positive CAM on pixels with
    Ŝ > 0 (column 0) and Ŝ < 0 (column 1). It is a buffer, so checkpoints carry it and inference
    uses the orientation learnt in training.
    """

    stored: torch.Tensor

    def __init__(self, num_classes: int, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = float(momentum)  # MXNet convention: the weight of the old value
        self.register_buffer("stored", torch.zeros(num_classes, 2))

    @torch.no_grad()
    def update(self, cam: torch.Tensor, raw_scores: torch.Tensor, labels: torch.Tensor) -> None:
        """One EMA step from a batch: cam and raw_scores B x C x h x w, labels B x C multi-hot.

        Per image, the mean of max(CAM, 0) over each sign group (count floored at 1e-5); per class,
        the average over every batch image holding the class (multi-class images included).
        Classes absent from the batch (on every rank) keep their stored value.
        """
        cam = cam.to(self.stored.dtype).clamp(min=0)
        labels = labels.to(self.stored.dtype)
        per_image = []
        for group in (raw_scores > 0, raw_scores < 0):
            group = group.to(cam.dtype)
            per_image.append((cam * group).sum((2, 3)) / group.sum((2, 3)).clamp(min=1e-5))  # B x C
        sums = torch.stack([(mean * labels).sum(0) for mean in per_image], dim=1)  # C x 2
        counts = labels.sum(0)  # C
        if dist.is_available() and dist.is_initialized():
            # All ranks see the same pooled batch, so their signs never disagree.
            packed = torch.cat([sums, counts[:, None]], dim=1)
            dist.all_reduce(packed)
            sums, counts = packed[:, :2], packed[:, 2]
        current = sums / counts.clamp(min=1e-5)[:, None]
        blended = self.momentum * self.stored + (1 - self.momentum) * current
        present = (counts > 0.5)[:, None]  # official: empty if label count < 0.999
        self.stored.copy_(torch.where(present, blended, self.stored))

    def sign(self) -> torch.Tensor:
        """C values in {+1, -1}: +1 where pos-mean >= neg-mean (so +1 before any update)."""
        return torch.where(self.stored[:, 0] >= self.stored[:, 1], 1.0, -1.0).to(self.stored.dtype)

    def forward(self, raw_scores: torch.Tensor) -> torch.Tensor:
        """S = Ŝ * sign, per class: B x C x h x w -> B x C x h x w."""
        return raw_scores * self.sign().to(raw_scores.dtype)[None, :, None, None]


def _bilinear_taps(source: int, target: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where each of `target` outputs samples `source` inputs under bilinear resizing with
    align_corners=True: (lower index, upper index, upper weight), computed in `dtype` as PyTorch's CPU
    kernel does (source position = i (source - 1) / (target - 1), index floored, weight clamped to 0..1)."""
    scale = torch.tensor((source - 1) / (target - 1) if target > 1 else 0.0, dtype=dtype)
    position = torch.arange(target, dtype=dtype) * scale
    lower = position.floor().long().clamp(max=source - 1)
    weight = (position - lower).clamp(0, 1)
    return lower, (lower + 1).clamp(max=source - 1), weight


def superpixel_memberships(superpixels: torch.Tensor, size: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
    """Soft memberships B x K x (h*w) of B x H x W superpixel ids (0..K-1, K = batch max + 1).

    The one-hot map resized bilinearly with align_corners=True, as the official MXNet
    `BilinearResize2D` (at equal sizes the one-hot map itself). Built without the B x K x H x W one-hot
    image: each output reads four input pixels, so their four weights are added to their four ids'
    rows (equal to resizing the one-hot map up to float rounding; tests/test_model.py compares them).
    """
    batch, height, width = superpixels.shape
    count = int(superpixels.max()) + 1
    (top, bottom, down), (left, right, across) = (
        _bilinear_taps(height, size[0], dtype),
        _bilinear_taps(width, size[1], dtype),
    )
    rows, cols = torch.stack([top, top, bottom, bottom]), torch.stack([left, right, left, right])
    device = superpixels.device
    ids = superpixels[:, rows[:, :, None].to(device), cols[:, None, :].to(device)].flatten(2)  # B x 4 x hw
    weights = torch.stack(
        [
            (1 - down)[:, None] * (1 - across),
            (1 - down)[:, None] * across,
            down[:, None] * (1 - across),
            down[:, None] * across,
        ]
    ).flatten(1)  # 4 x hw
    memberships = torch.zeros(batch, count, size[0] * size[1], dtype=dtype, device=device)
    return memberships.scatter_add_(1, ids, weights.to(device).expand(batch, -1, -1))


@torch.no_grad()
def refine_with_superpixels(scores: torch.Tensor, superpixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """S' from S by averaging inside superpixels, as the official `SPRefine` (Sec. 4.3).

    scores: B x C x h x w (sign-corrected S); superpixels: B x H x W ids; labels: B x C.
    Returns B x C x h x w. Absent classes are zeroed first. A superpixel is foreground if some class
    has a positive membership-weighted vote of sign(S); it then belongs to the class with the highest
    mean, inside it, of max(S, 0) divided at each pixel by the largest score over classes there
    (floored at 1e-5: the official `score_flat.max(axis=1)` on B x C x hw), and takes, for that
    class, the mean of max(S, 0). Every other (class, superpixel) pair takes the mean of min(S, 0).
    Each pixel thus gives 1 to its top class and the others their ratio to it, so the winner is the
    class leading on most of the superpixel, whatever each class's overall scale. On one-class
    images only that class can win, so S' is the same as with a per-class max over pixels.
    """
    batch, classes, height, width = scores.shape
    memberships = superpixel_memberships(superpixels, (height, width), scores.dtype)  # B x K x hw
    weights = memberships / memberships.sum(2, keepdim=True).clamp(min=1e-5)
    flat = scores.flatten(2) * labels.to(scores.dtype)[:, :, None]  # B x C x hw, absent classes 0

    votes = torch.bmm(torch.sign(flat), memberships.transpose(1, 2))  # B x C x K
    foreground = votes.amax(1) > 1e-5  # B x K
    positive = flat.clamp(min=0)
    normalised = positive / flat.amax(1, keepdim=True).clamp(min=1e-5)  # over classes, at each pixel
    winner = torch.bmm(normalised, weights.transpose(1, 2)).argmax(1)  # B x K
    is_winner = F.one_hot(winner, classes).transpose(1, 2).bool()  # B x C x K
    takes_positive = is_winner & foreground[:, None, :] & labels.bool()[:, :, None]

    mean_positive = torch.bmm(positive, weights.transpose(1, 2))  # B x C x K
    mean_negative = torch.bmm(flat.clamp(max=0), weights.transpose(1, 2))
    values = torch.where(takes_positive, mean_positive, mean_negative)
    # Scatter back with the un-normalised memberships, as the official batch_dot.
    return torch.bmm(values, memberships).view(batch, classes, height, width)


def _new_conv(in_channels: int, out_channels: int, kernel_size: int = 1, *, bias: bool = True) -> nn.Conv2d:
    """A new layer: weight Normal(0, 0.01), bias 0 (MXNet's Normal initializer zeroes biases)."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)
    nn.init.normal_(conv.weight, std=NEW_LAYER_STD)
    if bias:
        nn.init.zeros_(conv.bias)
    return conv


class ICDNet(nn.Module):
    """CAM branch + ICD branch (Fig. 2) on DeepLab VGG16, variants of Tables 3-6 selectable.

    - CAM: fc8 (1x1, with bias) on the CAM branch's fc7; class logits are its global average.
    - Bottom-up: BatchNorm (gamma fixed at 1, beta trainable) on the chosen feature, then the
      directions `directions` (C x D).
    - Top-down on the same BN'd feature, structure a (classifier on it), b (fc6_ft -> fc7_ft,
      classifier on fc7_ft), c (classifier on concat(feature, fc6_ft, fc7_ft), the paper's) or
      d (as c with the CAM branch's own fc6/fc7). The classifier has no bias.

    `sign_momentum` and `bn_momentum` use MXNet's convention (the weight of the old value, 0.9).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
        bottom_up_feature: str = "conv5",
        top_down: bool = True,
        top_down_structure: str = "c",
        refine: bool = True,
        sign_momentum: float = 0.9,
        bn_momentum: float = 0.9,
    ) -> None:
        super().__init__()
        if bottom_up_feature not in BOTTOM_UP_FEATURES:
            raise ConfigError(
                f"icd.bottom_up_feature must be one of {sorted(BOTTOM_UP_FEATURES)}, got {bottom_up_feature!r}"
            )
        if top_down_structure not in TOP_DOWN_STRUCTURES:
            raise ConfigError(
                f"icd.top_down_structure must be one of {TOP_DOWN_STRUCTURES}, got {top_down_structure!r}"
            )
        self.bottom_up_feature = bottom_up_feature
        self.top_down = bool(top_down)
        self.top_down_structure = top_down_structure
        self.refine = bool(refine)

        self.backbone = VGG16DeepLab(width, batch_norm, fc6_dilation=1, dropout=dropout)
        fc_channels = self.backbone.feature_channels["fc7"]
        self.fc8 = _new_conv(fc_channels, num_classes)

        channels = sum(self.backbone.feature_channels[k] for k in BOTTOM_UP_FEATURES[bottom_up_feature])
        self.feature_bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=1.0 - bn_momentum)
        self.feature_bn.weight.requires_grad_(False)  # MXNet fix_gamma=True: gamma stays 1
        self.directions = nn.Parameter(torch.randn(num_classes, channels) * NEW_LAYER_STD)
        self.sign_flip = SignFlip(num_classes, sign_momentum)

        if self.top_down:
            self._build_top_down(channels, fc_channels, num_classes)

    def _build_top_down(self, channels: int, fc_channels: int, num_classes: int) -> None:
        structure = self.top_down_structure
        if structure == "d" and channels != self.backbone.fc6.in_channels:
            raise ConfigError(
                f"icd.top_down_structure 'd' shares the CAM branch's fc6, which takes "
                f"{self.backbone.fc6.in_channels} channels, but bottom_up_feature "
                f"{self.bottom_up_feature!r} has {channels}. Use conv4 or conv5, or structure c."
            )
        if structure in ("b", "c"):
            self.fc6_ft = _new_conv(channels, fc_channels, 3)
            self.fc7_ft = _new_conv(fc_channels, fc_channels, 1)
        classifier_in = {"a": channels, "b": fc_channels}.get(structure, channels + 2 * fc_channels)
        self.top_down_classifier = _new_conv(classifier_in, num_classes, bias=False)

    def load_backbone(self, path_or_state_dict: str | os.PathLike | Mapping) -> None:
        """Load VGG16 weights strictly, then copy fc6/fc7 into fc6_ft/fc7_ft (official `run_icd.py`).

        The copy happens only when fc6_ft takes the same input as fc6 (conv4 or conv5 features of
        structures b/c); fc7_ft is copied together with fc6_ft, never alone.
        """
        load_vgg16_weights(self.backbone, path_or_state_dict)
        fc6_ft = getattr(self, "fc6_ft", None)
        if fc6_ft is None or fc6_ft.weight.shape != self.backbone.fc6.weight.shape:
            return
        with torch.no_grad():
            for source, target in ((self.backbone.fc6, self.fc6_ft), (self.backbone.fc7, self.fc7_ft)):
                target.weight.copy_(source.weight)
                target.bias.copy_(source.bias)

    def _bottom_up_input(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """The chosen feature (B x D x h x w) before the ICD BatchNorm."""
        parts = []
        for key in BOTTOM_UP_FEATURES[self.bottom_up_feature]:
            if key == "fc6":
                # fc6 after ReLU but before dropout: dropout's zeros are not a feature of the image.
                parts.append(F.relu(self.backbone.fc6(features["pool5"])))
            else:
                parts.append(features[key])
        return torch.cat(parts, dim=1)

    def _top_down(self, feature: torch.Tensor) -> torch.Tensor:
        """Adapted scores S'' (B x C x h x w) from the BN'd feature; no dropout on this branch."""
        if self.top_down_structure == "a":
            return self.top_down_classifier(feature)
        if self.top_down_structure == "d":
            fc6, fc7 = self.backbone.fc6, self.backbone.fc7
        else:
            fc6, fc7 = self.fc6_ft, self.fc7_ft
        hidden6 = F.relu(fc6(feature))
        hidden7 = F.relu(fc7(hidden6))
        if self.top_down_structure == "b":
            return self.top_down_classifier(hidden7)
        return self.top_down_classifier(torch.cat([feature, hidden6, hidden7], dim=1))

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, superpixels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        """images B x 3 x H x W (already x - 127), labels B x C multi-hot, superpixels B x H x W ids.

        Returns class_logits (B x C), pooled (the feature they classify, pooled: B x D, for W-OoD's distance
        loss), cam, bottom_up_raw (Ŝ, grad into `directions` only),
        bottom_up (S, no grad), refined (S', no grad; None without refinement or superpixels) and
        adapted (S'', None without the top-down branch), all maps B x C x h x w. In training mode
        the sign EMA is updated from this batch before it orients S, as `AccumResign` does.
        """
        features = self.backbone(images)
        cam = self.fc8(features["fc7"])
        feature = self.feature_bn(self._bottom_up_input(features))
        raw = bottom_up_scores(feature, self.directions)
        if self.training:
            self.sign_flip.update(cam.detach(), raw.detach(), labels)
        scores = self.sign_flip(raw.detach())
        refined = None
        if self.refine and superpixels is not None:
            refined = refine_with_superpixels(scores, superpixels, labels)
        return {
            "class_logits": cam.mean((2, 3)),
            "pooled": pooled_class_feature(features),
            "cam": cam,
            "bottom_up_raw": raw,
            "bottom_up": scores,
            "refined": refined,
            "adapted": self._top_down(feature) if self.top_down else None,
        }

    def parameter_groups(self, lr: float, weight_decay: float, new_layer_lr_mult: float = 10.0) -> list[dict]:
        """SGD parameter groups with the official learning-rate and weight-decay multipliers.

        MXNet's SGD decays only `*_weight` (and `*_gamma`) parameters, so biases and BatchNorm
        parameters get none; fc8 and the top-down classifier learn `new_layer_lr_mult` times faster.
        Every group carries `name` and `lr_mult` (lr = base lr * lr_mult) for the poly schedule.
        """
        groups: dict[str, tuple[float, float, list[nn.Parameter]]] = {
            "backbone_weights": (1.0, weight_decay, []),
            "backbone_biases": (1.0, 0.0, []),
            "batch_norm": (1.0, 0.0, []),
            "directions": (1.0, weight_decay, [self.directions]),
            "top_down_fc_weights": (1.0, weight_decay, []),
            "top_down_fc_biases": (1.0, 0.0, []),
            "new_layer_weights": (new_layer_lr_mult, weight_decay, [self.fc8.weight]),
            "new_layer_biases": (new_layer_lr_mult, 0.0, [self.fc8.bias]),
        }
        for module in self.backbone.modules():
            if isinstance(module, nn.Conv2d):
                groups["backbone_weights"][2].append(module.weight)
                groups["backbone_biases"][2].append(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                groups["batch_norm"][2].extend([module.weight, module.bias])
        groups["batch_norm"][2].append(self.feature_bn.bias)
        if hasattr(self, "fc6_ft"):
            groups["top_down_fc_weights"][2].extend([self.fc6_ft.weight, self.fc7_ft.weight])
            groups["top_down_fc_biases"][2].extend([self.fc6_ft.bias, self.fc7_ft.bias])
        if self.top_down:
            groups["new_layer_weights"][2].append(self.top_down_classifier.weight)

        result = [
            {"name": name, "params": params, "lr": lr * mult, "lr_mult": mult, "weight_decay": decay}
            for name, (mult, decay, params) in groups.items()
            if params
        ]
        grouped = [id(p) for group in result for p in group["params"]]
        trainable = [id(p) for p in self.parameters() if p.requires_grad]
        if sorted(grouped) != sorted(trainable):
            raise RuntimeError("parameter_groups does not cover every trainable parameter exactly once")
        return result
