"""DeepLab-LargeFOV (DeepLab v1) on the DeepLab VGG16 backbone.

The backbone is `icd.backbones.VGG16DeepLab` with fc6 as a 3x3 convolution of dilation 12 (the
"large field of view"), fc6/fc7 1024 channels with dropout 0.5, and a 1x1 fc8 classifier: about
20.5M parameters at full width, output stride 8.
"""

from __future__ import annotations

import torch
from torch import nn

from icd.backbones import VGG16DeepLab
from icd.data.classes import NUM_CLASSES

LARGEFOV_DILATION = 12
HEAD_INIT_STD = 0.01


class DeepLabLargeFOV(nn.Module):
    """VGG16 DeepLab-LargeFOV: logits (B x classes x H/8 x W/8) for input normalised by the caller."""

    def __init__(self, *, width: float = 1.0, num_classes: int = NUM_CLASSES, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = VGG16DeepLab(width=width, fc6_dilation=LARGEFOV_DILATION, dropout=dropout)
        self.fc8 = nn.Conv2d(self.backbone.feature_channels["fc7"], num_classes, 1)
        nn.init.normal_(self.fc8.weight, std=HEAD_INIT_STD)
        nn.init.zeros_(self.fc8.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc8(self.backbone(images)["fc7"])
