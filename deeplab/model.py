"""DeepLab segmentation networks: LargeFOV on VGG16 (DeepLab v1), LargeFOV or ASPP on ResNet101 (DeepLab v2).

- VGG16: `wsss.nets.backbones.VGG16DeepLab` with fc6 a 3x3 convolution of dilation 12 (the "large field of
  view"), fc6/fc7 1024 channels with dropout 0.5 and a 1x1 fc8 classifier: 20.5M parameters at full width.
- ResNet101 (`wsss.nets.resnet`, output stride 8): DeepLab v2's classifier is a sum of 3x3 convolutions
  straight to the classes, dilated 12 for LargeFOV or 6/12/18/24 for ASPP.

Every network returns logits at 1/8 of the input; the input is normalised by the caller as the weights
it starts from expect (`wsss.nets.normalisation`, recorded in the trained model). `freeze_bn` keeps
BatchNorm in eval mode with its affine parameters fixed, DeepLab's practice with ImageNet statistics and
batches too small to estimate new ones.
"""

from __future__ import annotations

import torch
from torch import nn

from deeplab.workflow import LARGEFOV_DILATION
from wsss.core.errors import ConfigError
from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights, read_state_dict
from wsss.nets.resnet import ResNet101

BACKBONES = ("vgg16", "resnet101")
HEADS = ("largefov", "aspp")
ASPP_RATES = (6, 12, 18, 24)
HEAD_INIT_STD = 0.01


class _DeepLab(nn.Module):
    """Shared behaviour: a `head` learning faster than the backbone, and optionally frozen BatchNorm."""

    head: nn.Module
    backbone: nn.Module

    def freeze_batch_norm(self) -> None:
        """BatchNorm in eval mode for good (train() keeps it there) and its affine parameters fixed."""
        self.frozen_bn = True
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
                for parameter in module.parameters():
                    parameter.requires_grad_(False)

    def train(self, mode: bool = True) -> _DeepLab:
        super().train(mode)
        if getattr(self, "frozen_bn", False):
            for module in self.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.eval()
        return self


class DeepLabLargeFOV(_DeepLab):
    """VGG16 DeepLab-LargeFOV: logits (B x classes x H/8 x W/8); `head` is fc8. `fc6_dilation`: the dilation its fc6
    weights were trained at (deeplab.workflow.vgg16_fc6_dilation), LargeFOV's 12 for ImageNet's."""

    def __init__(
        self,
        *,
        num_classes: int,
        width: float = 1.0,
        batch_norm: bool = False,
        dropout: float = 0.5,
        fc6_dilation: int = LARGEFOV_DILATION,
    ) -> None:
        super().__init__()
        self.backbone = VGG16DeepLab(width=width, batch_norm=batch_norm, fc6_dilation=fc6_dilation, dropout=dropout)
        self.head = nn.Conv2d(self.backbone.feature_channels["fc7"], num_classes, 1)
        nn.init.normal_(self.head.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.head.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images)["fc7"])


class DilatedClassifier(nn.Module):
    """DeepLab v2's classifier: the sum of 3x3 convolutions to the classes, one per dilation rate."""

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=rate, dilation=rate) for rate in rates
        )
        for branch in self.branches:
            nn.init.normal_(branch.weight, std=HEAD_INIT_STD)
            nn.init.zeros_(branch.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.stack([branch(features) for branch in self.branches]).sum(dim=0)


class DeepLabResNet101(_DeepLab):
    """ResNet101 DeepLab v2: LargeFOV (one branch, rate 12) or ASPP (rates 6, 12, 18, 24, summed)."""

    def __init__(self, *, num_classes: int, head: str = "largefov", width: float = 1.0) -> None:
        super().__init__()
        self.backbone = ResNet101(width=width)
        rates = ASPP_RATES if head == "aspp" else (LARGEFOV_DILATION,)
        self.head = DilatedClassifier(self.backbone.out_channels, num_classes, rates)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


# The keys of a stored network description (deeplab.train.network_options) that build_model takes; freeze_bn is
# applied after the weights are loaded.
NETWORK_KEYS = ("backbone", "head", "width", "batch_norm", "fc6_dilation")


def build_model(
    *,
    backbone: str,
    head: str,
    width: float,
    batch_norm: bool = False,
    freeze_bn: bool = False,
    fc6_dilation: int = LARGEFOV_DILATION,
    num_classes: int,
) -> _DeepLab:
    """The network a `deeplab` config describes, for `num_classes` labels (background included: the dataset's
    `ClassList.num_classes`); `batch_norm` only concerns VGG16, ResNet101 always has BN."""
    if backbone not in BACKBONES:
        raise ConfigError(f"unknown DeepLab backbone {backbone!r}; choose one of {', '.join(BACKBONES)}.")
    if head not in HEADS:
        raise ConfigError(f"unknown DeepLab head {head!r}; choose one of {', '.join(HEADS)}.")
    if backbone == "vgg16":
        if head != "largefov":
            raise ConfigError(
                "deeplab.head 'aspp' is DeepLab v2's ResNet101 head; VGG16 runs DeepLab-LargeFOV. "
                "Set deeplab.head: largefov or deeplab.backbones: [resnet101]."
            )
        model: _DeepLab = DeepLabLargeFOV(
            width=width, batch_norm=batch_norm, num_classes=num_classes, fc6_dilation=fc6_dilation
        )
    else:
        model = DeepLabResNet101(head=head, width=width, num_classes=num_classes)
    if freeze_bn:
        model.freeze_batch_norm()
    return model


def load_imagenet_weights(model: _DeepLab, path) -> None:
    """Load backbone weights strictly: VGG16 through `load_vgg16_weights` (fc6/fc7 subsampling),
    ResNet101 from a torchvision `resnet101` state dict (its `fc.*` ImageNet classifier is dropped)."""
    if isinstance(model, DeepLabLargeFOV):
        load_vgg16_weights(model.backbone, path)
        return
    state, name = read_state_dict(path, None)
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = model.backbone.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:  # absent from old torchvision files
            state[key] = torch.zeros_like(value)
    problems = [f"  {key}: missing from the file" for key in expected if key not in state]
    problems += [f"  {key}: unexpected in the file" for key in state if key not in expected]
    problems += [
        f"  {key}: expected {tuple(expected[key].shape)}, found {tuple(state[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if problems:
        raise ConfigError(
            f"{name}: not a torchvision ResNet101 state dict for a width-{model.backbone.width:g} model "
            f"({len(problems)} problems):\n" + "\n".join(problems[:8]) + "\n"
            "Point deeplab.weights.resnet101 at resnet101-63fe2227.pth (ImageNet weights exist only at width 1.0)."
        )
    model.backbone.load_state_dict(state, strict=True)


def parameter_groups(
    model: _DeepLab, *, weight_decay: float, head_lr_mult: float, head_bias_lr_mult: float
) -> list[dict]:
    """SGD groups with DeepLab's multipliers: head weights x`head_lr_mult`, head biases x`head_bias_lr_mult`,
    no weight decay on biases (nor BatchNorm); frozen parameters are left out. Each group carries
    `lr_mult` for the poly schedule."""
    head = {id(p) for p in model.head.parameters()}
    groups = {
        "backbone_weights": (1.0, weight_decay, []),
        "backbone_biases": (1.0, 0.0, []),
        "head_weights": (head_lr_mult, weight_decay, []),
        "head_biases": (head_bias_lr_mult, 0.0, []),
    }
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if id(parameter) in head else "backbone"
        kind = "weights" if parameter.ndim > 1 else "biases"
        groups[f"{part}_{kind}"][2].append(parameter)
    return [
        {"name": name, "params": params, "lr_mult": mult, "weight_decay": decay}
        for name, (mult, decay, params) in groups.items()
        if params
    ]
