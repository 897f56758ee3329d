"""DeepLab VGG16: output stride, torchvision parameter names, and strict weight loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wsss.core.errors import ConfigError
from wsss.nets.backbones import FEATURE_KEYS, UniformDropout, VGG16DeepLab, load_vgg16_weights, save_backbone

# torchvision vgg16's 13 `features` convolutions: (out channels, in channels), in order.
TV_VGG16_CHANNELS = [
    (64, 3),
    (64, 64),
    (128, 64),
    (128, 128),
    (256, 128),
    (256, 256),
    (256, 256),
    (512, 256),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
]
# Their module indices in `features`: vgg16 (conv, ReLU, pools between stages) and vgg16_bn, where each conv is
# followed by its BatchNorm at index + 1.
TV_VGG16_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
TV_VGG16_BN_CONV_INDICES = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


def torchvision_feature_shapes(batch_norm: bool) -> dict[str, tuple[int, ...]]:
    """The `features.*` keys and shapes of torchvision's vgg16 / vgg16_bn state dict."""
    shapes: dict[str, tuple[int, ...]] = {}
    indices = TV_VGG16_BN_CONV_INDICES if batch_norm else TV_VGG16_CONV_INDICES
    for index, (out_c, in_c) in zip(indices, TV_VGG16_CHANNELS, strict=True):
        shapes[f"features.{index}.weight"] = (out_c, in_c, 3, 3)
        shapes[f"features.{index}.bias"] = (out_c,)
        if batch_norm:
            for name in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"features.{index + 1}.{name}"] = (out_c,)
            shapes[f"features.{index + 1}.num_batches_tracked"] = ()
    return shapes


def fake_torchvision_state(batch_norm: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision-layout VGG16 state dict with random values (cheap: uniform_ in place)."""
    gen = torch.Generator().manual_seed(seed)
    state = {
        k: torch.empty(s).uniform_(-1, 1, generator=gen)
        for k, s in torchvision_feature_shapes(batch_norm).items()
        if not k.endswith("num_batches_tracked")
    }
    if batch_norm:
        for k in torchvision_feature_shapes(True):
            if k.endswith("num_batches_tracked"):
                state[k] = torch.tensor(7)
    for key, shape in {
        "classifier.0.weight": (4096, 25088),
        "classifier.0.bias": (4096,),
        "classifier.3.weight": (4096, 4096),
        "classifier.3.bias": (4096,),
        "classifier.6.weight": (1000, 4096),
        "classifier.6.bias": (1000,),
    }.items():
        state[key] = torch.empty(shape).uniform_(-1, 1, generator=gen)
    return state


@pytest.mark.parametrize("size, expected", [(321, 41), (513, 65)])
def test_output_stride_8(size, expected):
    model = VGG16DeepLab(width=0.125).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, size, size))
    assert tuple(out) == FEATURE_KEYS
    for key, value in out.items():
        assert value.shape[-2:] == (expected, expected), key
        assert value.shape[1] == model.feature_channels[key]


def test_channels_at_full_width_and_small_forward():
    model = VGG16DeepLab(width=1.0).eval()
    assert model.feature_channels == {
        "conv4": 512,
        "conv5": 512,
        "pool5": 512,
        "fc6": 1024,
        "fc7_activation": 1024,
        "fc7": 1024,
    }
    with torch.no_grad():
        out = model(torch.randn(1, 3, 33, 33))
    assert {k: (v.shape[1], v.shape[-1]) for k, v in out.items()} == {
        "conv4": (512, 5),
        "conv5": (512, 5),
        "pool5": (512, 5),
        "fc6": (1024, 5),
        "fc7_activation": (1024, 5),
        "fc7": (1024, 5),
    }
    for value in out.values():
        assert (value >= 0).all()  # all after ReLU


def test_width_scales_every_channel_count():
    model = VGG16DeepLab(width=0.125, fc6_dilation=12)
    assert model.features[0].out_channels == 8
    assert model.features[28].out_channels == 64
    assert model.fc6.weight.shape == (128, 64, 3, 3)
    assert model.fc6.dilation == (12, 12) and model.fc6.padding == (12, 12)
    assert VGG16DeepLab(width=0.001).features[0].out_channels == 1


def test_deeplab_layer_changes():
    feats = VGG16DeepLab(width=0.125).features
    pools = [m for m in feats if isinstance(m, torch.nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)] * 2
    assert [feats[i].dilation for i in (24, 26, 28)] == [(2, 2)] * 3
    assert [feats[i].dilation for i in (17, 19, 21)] == [(1, 1)] * 3


@pytest.mark.parametrize("batch_norm", [False, True])
def test_parameter_names_match_torchvision(batch_norm):
    model = VGG16DeepLab(width=1.0, batch_norm=batch_norm)
    features = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith("features.")}
    assert features == torchvision_feature_shapes(batch_norm)
    others = sorted(k for k in model.state_dict() if not k.startswith("features."))
    assert others == ["fc6.bias", "fc6.weight", "fc7.bias", "fc7.weight"]


def test_init_is_kaiming_with_zero_bias():
    model = VGG16DeepLab(width=0.25, batch_norm=True)
    conv = model.features[40]  # conv5_3 in the BN layout
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.1)
    assert (conv.bias == 0).all()
    assert (model.features[41].weight == 1).all() and (model.features[41].bias == 0).all()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_torchvision_weights_convert_deeplab_style(batch_norm):
    state = fake_torchvision_state(batch_norm)
    model = VGG16DeepLab(width=1.0, batch_norm=batch_norm)
    load_vgg16_weights(model, state)
    got = model.state_dict()
    for key, value in state.items():
        if key.startswith("features."):
            assert torch.equal(got[key], value), key
    fc6 = state["classifier.0.weight"].numpy().reshape(4096, 512, 7, 7)[::4, :, ::3, ::3]
    np.testing.assert_array_equal(got["fc6.weight"].numpy(), fc6)
    np.testing.assert_array_equal(got["fc6.bias"].numpy(), state["classifier.0.bias"].numpy()[::4])
    fc7 = state["classifier.3.weight"].numpy()[::4, ::4]
    np.testing.assert_array_equal(got["fc7.weight"].numpy(), fc7[:, :, None, None])
    np.testing.assert_array_equal(got["fc7.bias"].numpy(), state["classifier.3.bias"].numpy()[::4])


def test_old_torchvision_bn_file_without_counters_loads():
    state = {k: v for k, v in fake_torchvision_state(True).items() if not k.endswith("num_batches_tracked")}
    model = VGG16DeepLab(width=1.0, batch_norm=True)
    load_vgg16_weights(model, state)
    assert model.features[1].num_batches_tracked.item() == 0


def test_deeplab_format_round_trip(tmp_path):
    source = VGG16DeepLab(width=0.125, batch_norm=True)
    source.features[1].running_mean.uniform_()
    path = tmp_path / "backbone.pt"
    save_backbone(source, path, "minus127")
    target = VGG16DeepLab(width=0.125, batch_norm=True)
    load_vgg16_weights(target, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_wrong_width_file_names_file_key_and_fix(tmp_path):
    path = tmp_path / "narrow.pt"
    save_backbone(VGG16DeepLab(width=0.125), path, "minus127")
    with pytest.raises(ConfigError) as info:
        load_vgg16_weights(VGG16DeepLab(width=0.25), path)
    message = str(info.value)
    assert str(path) in message
    assert "features.0.weight: expected (16, 3, 3, 3), found (8, 3, 3, 3)" in message
    assert "width 0.125" in message and "model.width" in message


def test_batch_norm_mismatch_is_refused(tmp_path):
    path = tmp_path / "plain.pt"
    save_backbone(VGG16DeepLab(width=0.125), path, "minus127")
    with pytest.raises(ConfigError, match="missing from the file"):
        load_vgg16_weights(VGG16DeepLab(width=0.125, batch_norm=True), path)


def test_imagenet_weights_need_full_width():
    with pytest.raises(ConfigError, match="model.width: 1.0"):
        load_vgg16_weights(VGG16DeepLab(width=0.5), {"classifier.0.weight": torch.zeros(1)}, source_name="vgg.pth")


def test_unknown_layout_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="neither a torchvision"):
        load_vgg16_weights(VGG16DeepLab(width=0.125), {"conv1.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="not found"):
        load_vgg16_weights(VGG16DeepLab(width=0.125), tmp_path / "absent.pt")


class NotATensor:
    """Any pickled Python object: weights_only loading must refuse it."""

    def __init__(self):
        self.payload = "code could run here"


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    state = VGG16DeepLab(width=0.125).state_dict()
    state["extra"] = NotATensor()
    torch.save(state, path)
    with pytest.raises(ConfigError, match="weights_only") as info:
        load_vgg16_weights(VGG16DeepLab(width=0.125), path)
    assert str(path) in str(info.value)


def test_uniform_dropout_keeps_one_minus_p_scaled_and_passes_gradients_through_kept_values():
    torch.manual_seed(0)
    drop = UniformDropout(0.3).train()
    x = torch.rand(40, 50, 60) + 1.0  # no zeros: a zero output means dropped
    x.requires_grad_(True)
    y = drop(x)
    kept = y != 0
    # 120,000 draws: the kept fraction's standard deviation is 0.0013.
    assert abs(kept.float().mean().item() - 0.7) < 0.006
    torch.testing.assert_close(y[kept], x[kept] / 0.7)
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / 0.7)
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(UniformDropout(0.0).train()(x), x)
    assert not UniformDropout(1.0).train()(x).any()
