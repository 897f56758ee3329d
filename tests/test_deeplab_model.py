"""DeepLab networks: published parameter counts, output stride, torchvision weight loading, frozen BN, lr groups."""

from __future__ import annotations

import pytest
import torch

from deeplab.model import (
    DeepLabLargeFOV,
    DeepLabResNet101,
    build_model,
    load_imagenet_weights,
    parameter_groups,
)
from tests.torchvision_layouts import resnet101_torchvision_shapes
from wsss.core.errors import ConfigError
from wsss.data.classes import NUM_CLASSES
from wsss.nets.backbones import VGG16DeepLab, save_backbone


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_vgg16_largefov_parameter_count_is_deeplab_largefov():
    model = DeepLabLargeFOV(num_classes=NUM_CLASSES)
    # VGG16 convs 14,714,688 + fc6 3x3x512x1024 + fc7 1024x1024 + fc8 1024x21, with biases.
    assert count(model) == 14_714_688 + (3 * 3 * 512 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 21 + 21)
    assert count(model) == 20_505_429
    assert model.backbone.fc6.dilation == (12, 12) and model.backbone.fc6.padding == (12, 12)


def test_resnet101_parameter_counts_by_hand():
    trunk = 0
    for key, shape in resnet101_torchvision_shapes().items():
        if key.startswith("fc.") or key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        trunk += int(torch.tensor(shape).prod()) if shape else 1
    assert trunk == 44_549_160 - (2048 * 1000 + 1000)  # torchvision's resnet101 count minus its classifier
    branch = 3 * 3 * 2048 * 21 + 21  # one 3x3 conv 2048 -> 21 with bias
    largefov = DeepLabResNet101(head="largefov", num_classes=NUM_CLASSES)
    assert count(largefov) == trunk + branch == 42_887_253
    assert largefov.head.branches[0].dilation == (12, 12)
    aspp = DeepLabResNet101(head="aspp", num_classes=NUM_CLASSES)
    assert count(aspp) == trunk + 4 * branch == 44_048_532
    assert [b.dilation[0] for b in aspp.head.branches] == [6, 12, 18, 24]
    assert [b.padding[0] for b in aspp.head.branches] == [6, 12, 18, 24]


@pytest.mark.parametrize("backbone,head", [("vgg16", "largefov"), ("resnet101", "largefov"), ("resnet101", "aspp")])
def test_logits_at_output_stride_8(backbone, head, one_torch_thread):
    model = build_model(num_classes=NUM_CLASSES, backbone=backbone, head=head, width=0.0625).eval()
    with torch.no_grad():
        logits = model(torch.zeros(2, 3, 65, 97))
    assert logits.shape == (2, 21, 9, 13)


def test_resnet101_layer3_and_layer4_are_dilated_not_strided():
    model = DeepLabResNet101(width=0.0625, num_classes=NUM_CLASSES)
    for layer, dilation in ((model.backbone.layer3, 2), (model.backbone.layer4, 4)):
        assert {block.conv2.dilation[0] for block in layer} == {dilation}
        assert {block.conv2.stride[0] for block in layer} == {1}
    assert model.backbone.layer2[0].conv2.stride == (2, 2)


def test_torchvision_resnet101_weights_load_with_no_missing_or_unexpected_keys(tmp_path):
    torch.manual_seed(0)
    state = {
        key: (torch.randn(shape) if shape else torch.tensor(7)) for key, shape in resnet101_torchvision_shapes().items()
    }
    path = tmp_path / "resnet101-63fe2227.pth"
    torch.save(state, path)
    model = DeepLabResNet101(num_classes=NUM_CLASSES)
    head_before = model.head.branches[0].weight.clone()
    load_imagenet_weights(model, path)
    loaded = model.state_dict()
    assert all(
        torch.equal(loaded[f"backbone.{key}"], value) for key, value in state.items() if not key.startswith("fc.")
    )
    assert torch.equal(model.head.branches[0].weight, head_before)

    del state["layer3.22.bn3.running_var"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(
        ConfigError, match=r"layer3\.22\.bn3\.running_var: missing(.|\n)*layer5\.0\.conv1\.weight: unexpected"
    ):
        load_imagenet_weights(DeepLabResNet101(num_classes=NUM_CLASSES), path)


def test_vgg16_loads_the_icd_backbone_format(tmp_path):
    torch.manual_seed(0)
    source = VGG16DeepLab(width=0.125, batch_norm=True)
    save_backbone(source, tmp_path / "backbone.pth", "minus127")
    model = build_model(num_classes=NUM_CLASSES, backbone="vgg16", head="largefov", width=0.125, batch_norm=True)
    load_imagenet_weights(model, tmp_path / "backbone.pth")
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in source.state_dict().items())
    with pytest.raises(ConfigError, match="width"):
        load_imagenet_weights(
            build_model(num_classes=NUM_CLASSES, backbone="vgg16", head="largefov", width=0.25, batch_norm=True),
            tmp_path / "backbone.pth",
        )


def test_vgg16_has_no_aspp_head():
    with pytest.raises(ConfigError, match="VGG16 runs DeepLab-LargeFOV"):
        build_model(num_classes=NUM_CLASSES, backbone="vgg16", head="aspp", width=0.0625)


def test_frozen_batch_norm_stays_in_eval_mode_and_gets_no_gradient(one_torch_thread):
    model = build_model(num_classes=NUM_CLASSES, backbone="resnet101", head="largefov", width=0.0625, freeze_bn=True)
    model.train()
    batch_norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batch_norms and not any(m.training for m in batch_norms)
    before = [m.running_mean.clone() for m in batch_norms]
    model(torch.randn(2, 3, 33, 33)).sum().backward()
    assert all(torch.equal(m.running_mean, b) for m, b in zip(batch_norms, before, strict=True))
    assert all(m.weight.grad is None and not m.weight.requires_grad for m in batch_norms)
    assert model.backbone.conv1.weight.grad is not None


def test_parameter_groups_follow_deeplab_multipliers():
    model = build_model(num_classes=NUM_CLASSES, backbone="resnet101", head="aspp", width=0.0625, freeze_bn=True)
    groups = {g["name"]: g for g in parameter_groups(model, weight_decay=5e-4, head_lr_mult=10, head_bias_lr_mult=20)}
    assert (groups["head_weights"]["lr_mult"], groups["head_weights"]["weight_decay"]) == (10, 5e-4)
    assert (groups["head_biases"]["lr_mult"], groups["head_biases"]["weight_decay"]) == (20, 0.0)
    assert len(groups["head_weights"]["params"]) == len(groups["head_biases"]["params"]) == 4
    assert "backbone_biases" not in groups  # ResNet convs have no bias and the frozen BN is left out
    grouped = sum(len(g["params"]) for g in groups.values())
    assert grouped == sum(1 for p in model.parameters() if p.requires_grad)

    vgg = build_model(num_classes=NUM_CLASSES, backbone="vgg16", head="largefov", width=0.0625)
    groups = {g["name"]: g for g in parameter_groups(vgg, weight_decay=5e-4, head_lr_mult=10, head_bias_lr_mult=20)}
    assert groups["head_weights"]["params"] == [vgg.head.weight] and groups["head_biases"]["params"] == [vgg.head.bias]
    assert groups["backbone_biases"]["weight_decay"] == 0.0
    assert len(groups["backbone_biases"]["params"]) == 15  # 13 convs + fc6 + fc7
