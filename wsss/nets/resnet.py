"""ResNet101 at output stride 8 (DeepLab v2) with torchvision's parameter names.

Module names and shapes follow torchvision's `resnet101` (conv1, bn1, layer1..4 of Bottleneck blocks
with conv1/bn1/conv2/bn2/conv3/bn3 and downsample.0/.1; stride on the 3x3 conv as in torchvision), so
`resnet101-63fe2227.pth` loads without renaming once its `fc.*` classifier is dropped. layer3 and
layer4 keep stride 1 and dilate every block's 3x3 conv by 2 and 4, as DeepLab does, for output stride 8
(stride 32, torchvision's own geometry, serves to train the synthetic stand-in for ImageNet weights).
`width` scales every channel count for CPU runs.
"""

from __future__ import annotations

import torch
from torch import nn

from wsss.core.errors import ConfigError
from wsss.nets.backbones import scaled

RESNET101_BLOCKS = (3, 4, 23, 3)
BOTTLENECK_EXPANSION = 4
STEM_CHANNELS = 64
LAYER_PLANES = (64, 128, 256, 512)
# (stride, dilation) of layer1..4 by output stride: DeepLab's 8 with layer3/4 dilated, or the classifier's 32.
LAYER_GEOMETRY = {8: ((1, 1), (2, 1), (1, 2), (1, 4)), 32: ((1, 1), (2, 1), (2, 1), (2, 1))}


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided or dilated), 1x1 expand, plus the identity or a projection shortcut."""

    def __init__(self, in_channels: int, planes: int, *, stride: int, dilation: int) -> None:
        super().__init__()
        out_channels = planes * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


class ResNet101(nn.Module):
    """The ResNet101 trunk without its ImageNet classifier: N x 3 x H x W -> N x C x H/s x W/s (after ReLU).

    s = `output_stride`: 8 (DeepLab), or 32, which strides layer3/4 instead of dilating them: torchvision's
    classifier, trained cheaper at 1/16 of the positions, with the same parameters (DeepLab dilates ImageNet
    weights likewise). `zero_init_residual` starts every block as the identity (torchvision's option of that
    name): a thin ResNet101 trained from scratch hardly learns without it.
    """

    def __init__(self, width: float = 1.0, output_stride: int = 8, zero_init_residual: bool = False) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"deeplab.width must be positive, got {width}")
        if output_stride not in LAYER_GEOMETRY:
            raise ConfigError(f"ResNet101 output stride must be one of {sorted(LAYER_GEOMETRY)}, got {output_stride}")
        self.width = float(width)
        stem = scaled(STEM_CHANNELS, width)
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = stem
        for index, (blocks, planes, (stride, dilation)) in enumerate(
            zip(RESNET101_BLOCKS, LAYER_PLANES, LAYER_GEOMETRY[output_stride], strict=True), start=1
        ):
            planes = scaled(planes, width)
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(in_channels, planes, stride=stride if block == 0 else 1, dilation=dilation))
                in_channels = planes * BOTTLENECK_EXPANSION
            setattr(self, f"layer{index}", nn.Sequential(*layer))
        self.out_channels = in_channels
        self.reset_parameters(zero_init_residual)

    def reset_parameters(self, zero_init_residual: bool = False) -> None:
        """Kaiming-normal convs (fan_out, ReLU), BN at identity (each block's last BN at zero with
        `zero_init_residual`): torchvision's initialisation."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()
        if zero_init_residual:
            for module in self.modules():
                if isinstance(module, Bottleneck):
                    nn.init.zeros_(module.bn3.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
