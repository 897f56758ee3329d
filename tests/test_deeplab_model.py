"""DeepLab-LargeFOV VGG16: the published parameter count and the output stride."""

from __future__ import annotations

import torch

from deeplab.model import DeepLabLargeFOV


def test_full_width_parameter_count_is_deeplab_largefov():
    model = DeepLabLargeFOV()
    count = sum(p.numel() for p in model.parameters())
    # VGG16 convs 14,714,688 + fc6 3x3x512x1024 + fc7 1024x1024 + fc8 1024x21, with biases.
    assert count == 14_714_688 + (3 * 3 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 21 + 21)
    assert 20.4e6 < count < 20.6e6
    assert model.backbone.fc6.dilation == (12, 12) and model.backbone.fc6.padding == (12, 12)


def test_logits_at_output_stride_8():
    model = DeepLabLargeFOV(width=0.0625).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 65, 97))
    assert logits.shape == (2, 21, 9, 13)
