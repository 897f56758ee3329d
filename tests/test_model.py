"""ICD network: sign flip and superpixel refinement vs explicit-loop numpy references, and ICDNet wiring."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from icd.losses import icd_losses
from icd.model import ICDNet, SignFlip, refine_with_superpixels, superpixel_memberships
from wsss.core.errors import ConfigError
from wsss.nets.backbones import VGG16DeepLab

WIDTH = 0.0625
IMAGE_SHAPE = (3, 40, 56)  # non-square; stride 8 -> 5 x 7
NUM_CLASSES = 20


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# Sign flip


def numpy_sign_ema(batches, classes, momentum=0.9):
    stored = np.zeros((classes, 2))
    for cam, raw, labels in batches:
        for c in range(classes):
            holders = [n for n in range(len(labels)) if labels[n, c]]
            if not holders:
                continue
            current = np.zeros(2)
            for n in holders:
                for g, mask in enumerate((raw[n, c] > 0, raw[n, c] < 0)):
                    total = sum(max(v, 0.0) for v in cam[n, c][mask])
                    current[g] += total / max(mask.sum(), 1e-5)
            current /= len(holders)
            stored[c] = momentum * stored[c] + (1 - momentum) * current
    return stored


def test_sign_ema_matches_numpy_over_three_batches():
    rng = np.random.default_rng(0)
    classes = 4
    labels = [
        np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0]]),  # multi-class image counts too
        np.array([[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]]),  # class 0 absent: keeps its value
        np.array([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]]),  # class 2 never present, class 3 never
    ]
    batches = []
    for batch_labels in labels:
        cam = rng.normal(size=(3, classes, 3, 5))
        raw = rng.normal(size=(3, classes, 3, 5))
        batches.append((cam, raw, batch_labels))
    batches[0][1][0, 0] = np.abs(batches[0][1][0, 0])  # no negative pixel: count floored at 1e-5

    flip = SignFlip(classes, momentum=0.9).double()
    history = []
    for cam, raw, batch_labels in batches:
        flip.update(torch.tensor(cam), torch.tensor(raw), torch.tensor(batch_labels, dtype=torch.float64))
        history.append(flip.stored.clone())
    np.testing.assert_allclose(flip.stored.numpy(), numpy_sign_ema(batches, classes), rtol=1e-12)
    torch.testing.assert_close(history[1][0], history[0][0])  # absent in batch 2
    assert flip.stored[2:].abs().sum() == 0


def test_sign_decision_and_application():
    flip = SignFlip(4)
    assert flip.sign().tolist() == [1.0, 1.0, 1.0, 1.0]  # zeros: pos >= neg
    flip.stored.copy_(torch.tensor([[0.3, 0.1], [0.1, 0.3], [0.2, 0.2], [0.0, 1e-6]]))
    assert flip.sign().tolist() == [1.0, -1.0, 1.0, -1.0]
    raw = torch.randn(2, 4, 3, 3)
    flipped = flip(raw)
    torch.testing.assert_close(flipped, raw * torch.tensor([1.0, -1.0, 1.0, -1.0])[None, :, None, None])


def _sign_update_on_rank(rank: int, world: int, classes: int, store: str, shares: list, out_dir: Path) -> None:
    """One gloo process of the two-process test: SignFlip updated with this rank's share of each batch."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        flip = SignFlip(classes).double()
        for cam, raw, labels in shares[rank]:
            flip.update(cam, raw, labels)
        torch.save(flip.stored, out_dir / f"rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def test_sign_update_all_reduces_across_two_processes(tmp_path):
    """Two gloo processes, each with half of every batch: both must hold the EMA of the pooled batch
    (numpy_sign_ema over both halves together). The holders are split unevenly and some classes are on
    one rank only, so a missing all-reduce, a mean of the per-rank means or a wrong divisor all differ."""
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available")
    rng = np.random.default_rng(4)
    labels = [  # per batch: rank 0's images, rank 1's images
        ([[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]], [[0, 1, 0, 0], [1, 0, 0, 0]]),
        ([[0, 0, 0, 0], [0, 1, 0, 0]], [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0]]),  # class 0 on rank 1 only
        ([[0, 0, 1, 0], [1, 0, 0, 0]], [[0, 0, 0, 0]]),  # class 2 on rank 0 only, class 3 never
    ]
    shares = [[], []]
    pooled = []
    for batch in labels:
        parts = [
            (rng.normal(size=(len(held), 4, 3, 5)), rng.normal(size=(len(held), 4, 3, 5)), np.array(held))
            for held in batch
        ]
        pooled.append(tuple(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))
        for rank, (cam, raw, held) in enumerate(parts):
            shares[rank].append((torch.tensor(cam), torch.tensor(raw), torch.tensor(held, dtype=torch.float64)))
    torch.multiprocessing.spawn(_sign_update_on_rank, args=(2, 4, str(tmp_path / "store"), shares, tmp_path), nprocs=2)
    expected = numpy_sign_ema(pooled, 4)
    assert np.abs(expected[2]).sum() > 0 and np.abs(expected[3]).sum() == 0
    for rank in range(2):
        np.testing.assert_allclose(torch.load(tmp_path / f"rank{rank}.pt").numpy(), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# Superpixel refinement


def test_refinement_hand_built_example():
    """8 x 8 map, 4 superpixels of two columns each, classes 0 and 1 present, class 2 absent.

    Votes sum(sign S): class 0 = (16, -16, 16, -16), class 1 = (16, 8, 16, -8): superpixels 0-2
    foreground, 3 background. Positive scores divided at each pixel by the max over classes (the
    official rule): superpixel 0 (S = 2 vs 1) -> means (1, 0.5), class 0 wins; superpixel 1 ->
    (0, 12/16); superpixel 2 (S = 1 vs 1.5 everywhere) -> (2/3, 1): class 1 wins. Divided by each
    class's max over pixels instead (2 and 4), superpixel 2 would give (0.5, 0.375) and go to class 0.
    """
    superpixels = (torch.arange(8) // 2).repeat(8, 1)[None]  # columns 0-1, 2-3, 4-5, 6-7
    scores = torch.zeros(1, 3, 8, 8)
    scores[0, 0] = torch.tensor([2, 2, -1, -1, 1, 1, -2, -2], dtype=torch.float32)
    scores[0, 1, :, 0:2] = 1
    scores[0, 1, 0:6, 2:4] = 4
    scores[0, 1, 6:8, 2:4] = -2
    scores[0, 1, :, 4:6] = 1.5
    scores[0, 1, 0:2, 6:8] = 1
    scores[0, 1, 2:8, 6:8] = -0.5
    scores[0, 2] = 5  # absent class: zeroed
    labels = torch.tensor([[1.0, 1.0, 0.0]])

    refined = refine_with_superpixels(scores, superpixels, labels)
    expected_columns = torch.tensor(
        [
            [2, 2, -1, -1, 0, 0, -2, -2],  # fg(0), bg: mean of min(S, 0), lost to class 1: min(1, 0), bg
            [0, 0, 3, 3, 1.5, 1.5, -0.375, -0.375],  # bg, fg(1): 12*4/16, fg(1), bg: 12*-0.5/16
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    torch.testing.assert_close(refined[0], expected_columns[:, None, :].expand(3, 8, 8))


def numpy_resize_bilinear_align_corners(image, height, width):
    in_h, in_w = image.shape
    out = np.zeros((height, width))
    for i in range(height):
        y = i * (in_h - 1) / (height - 1) if height > 1 else 0.0
        y0 = int(np.floor(y))
        y1, wy = min(y0 + 1, in_h - 1), y - y0
        for j in range(width):
            x = j * (in_w - 1) / (width - 1) if width > 1 else 0.0
            x0 = int(np.floor(x))
            x1, wx = min(x0 + 1, in_w - 1), x - x0
            out[i, j] = (
                (1 - wy) * (1 - wx) * image[y0, x0]
                + (1 - wy) * wx * image[y0, x1]
                + wy * (1 - wx) * image[y1, x0]
                + wy * wx * image[y1, x1]
            )
    return out


def official_sp_refine(data, superpixel, label):
    """numpy transcription of the official `SPRefine.forward` (js-fan/ICD core/model/layers_custom/icd.py),
    step by step on its n x c x hw / n x K x hw arrays; `batch_dot(a, b, transpose_b=True)` is a @ b^T."""
    n, c, h, w = data.shape
    count = int(superpixel.max()) + 1
    sp_flat = (superpixel[:, None] == np.arange(count)[None, :, None, None]).astype(float)  # one_hot, n K H W
    if h != superpixel.shape[1]:  # BilinearResize2D
        sp_flat = np.array([[numpy_resize_bilinear_align_corners(m, h, w) for m in maps] for maps in sp_flat])
    sp_flat = sp_flat.reshape(n, count, h * w)
    score_flat = data.reshape(n, c, h * w) * label.reshape(n, c, 1)
    sp_sign = np.sign(score_flat) @ sp_flat.transpose(0, 2, 1)  # n c K
    sp_fg = sp_sign.max(axis=1, keepdims=True) > 1e-5
    sp_flat_avg = sp_flat / np.maximum(sp_flat.sum(axis=2, keepdims=True), 1e-5)
    score_flat_pos = np.maximum(score_flat, 0) / np.maximum(score_flat.max(axis=1, keepdims=True), 1e-5)
    sp_fg_score = score_flat_pos @ sp_flat_avg.transpose(0, 2, 1)
    sp_fg_label = np.eye(c)[sp_fg_score.argmax(axis=1)].transpose(0, 2, 1)  # one_hot(argmax over classes)
    sp_fg = sp_fg * sp_fg_label * label.reshape(n, c, 1)
    score_avg_fg = np.maximum(score_flat, 0) @ sp_flat_avg.transpose(0, 2, 1)
    score_avg_bg = np.minimum(score_flat, 0) @ sp_flat_avg.transpose(0, 2, 1)
    score_avg = score_avg_fg * sp_fg + score_avg_bg * (1 - sp_fg)
    return (score_avg @ sp_flat).reshape(n, c, h, w)


@pytest.mark.parametrize("seed", range(3))
def test_refinement_matches_the_official_operator_on_multi_class_images(seed):
    """Random multi-class scores with per-class scales far apart (so normalising each class by its own
    max over pixels instead would change winners), superpixels at 3-4x the score resolution (fractional
    memberships after the resize), ids missing from one image."""
    rng = np.random.default_rng(seed)
    batch, classes, height, width = 2, 4, 5, 7
    scales = np.array([1.0, 4.0, 0.3, 2.0])[None, :, None, None]
    scores = (rng.normal(size=(batch, classes, height, width)) + 0.3) * scales
    superpixels = rng.integers(0, 3, size=(batch, 17, 29))
    superpixels[0, 10:, 20:] = 3
    superpixels[1, :, :15] = 4  # image 1 lacks id 3; id 5 appears only here
    superpixels[1, :4, 15:] = 5
    labels = np.array([[1, 1, 1, 0], [0, 1, 1, 1]], dtype=float)
    refined = refine_with_superpixels(torch.tensor(scores), torch.tensor(superpixels), torch.tensor(labels))
    np.testing.assert_allclose(refined.numpy(), official_sp_refine(scores, superpixels, labels), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "source,target", [((160, 160), (20, 20)), ((17, 29), (5, 7)), ((9, 6), (9, 6)), ((5, 7), (12, 3))]
)
def test_memberships_equal_the_resized_one_hot_map(source, target, dtype):
    """The four-tap scatter against the plain construction (one-hot image, then PyTorch's bilinear resize with
    align_corners=True): down-, up- and non-resizing, both float widths, a batch with ids absent from one image."""
    generator = torch.Generator().manual_seed(sum(source) + sum(target))
    superpixels = torch.randint(0, 6, (2, *source), generator=generator)
    superpixels[1][superpixels[1] == 2] = 7
    onehot = torch.nn.functional.one_hot(superpixels, 8).permute(0, 3, 1, 2).to(dtype)
    if source != target:
        onehot = torch.nn.functional.interpolate(onehot, size=target, mode="bilinear", align_corners=True)
    expected = onehot.flatten(2)
    got = superpixel_memberships(superpixels, target, dtype)
    assert got.dtype == dtype and got.shape == expected.shape
    tolerance = 1e-6 if dtype == torch.float32 else 1e-14
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=0, atol=tolerance)


# ---------------------------------------------------------------------------------------------
# ICDNet


def make_net(**kwargs) -> ICDNet:
    torch.manual_seed(0)
    return ICDNet(num_classes=NUM_CLASSES, width=WIDTH, **kwargs)


def batch(seed=0, batch_size=2):
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand((batch_size, *IMAGE_SHAPE), generator=gen) * 255 - 127
    labels = torch.zeros(batch_size, NUM_CLASSES)
    labels[0, 3] = 1
    labels[1, [5, 7, 9]] = 1
    superpixels = torch.randint(0, 6, (batch_size, 5, 7), generator=gen)
    superpixels = superpixels.repeat_interleave(8, 1).repeat_interleave(8, 2)  # 40 x 56
    return images, labels, superpixels


@pytest.mark.parametrize("feature,structure", list(itertools.product(["conv4", "conv5", "fc6", "concat"], "abcd")))
def test_output_shapes_for_every_variant(feature, structure):
    if structure == "d" and feature in ("fc6", "concat"):
        with pytest.raises(ConfigError, match="top_down_structure"):
            make_net(bottom_up_feature=feature, top_down_structure=structure)
        return
    net = make_net(bottom_up_feature=feature, top_down_structure=structure).eval()
    images, labels, superpixels = batch()
    with torch.no_grad():
        out = net(images, labels, superpixels)
    assert out["class_logits"].shape == (2, NUM_CLASSES)
    for key in ("cam", "bottom_up_raw", "bottom_up", "refined", "adapted"):
        assert out[key].shape == (2, NUM_CLASSES, 5, 7), key


def test_refine_and_top_down_off_give_none():
    images, labels, superpixels = batch()
    with torch.no_grad():
        out = make_net(refine=False, top_down=False).eval()(images, labels, superpixels)
        no_superpixels = make_net().eval()(images, labels)
    assert out["refined"] is None and out["adapted"] is None
    assert no_superpixels["refined"] is None and no_superpixels["adapted"] is not None


def gradients_after(net, keys, **loss_kwargs):
    """Parameter name -> whether it got a non-zero gradient from the sum of the given losses."""
    images, labels, superpixels = batch()
    net.zero_grad(set_to_none=True)
    losses = icd_losses(net(images, labels, superpixels), labels, **loss_kwargs)
    sum(losses[k] for k in keys).backward()
    return {name: p.grad is not None and bool(p.grad.abs().sum() > 0) for name, p in net.named_parameters()}


def test_gradients_reach_the_right_parameters():
    net = make_net().train()
    total = gradients_after(net, ["total"])
    for name in (
        "directions",
        "fc8.weight",
        "top_down_classifier.weight",
        "fc6_ft.weight",
        "feature_bn.bias",
        "backbone.features.0.weight",
        "backbone.fc7.weight",
    ):
        assert total[name], name

    bottom_up = gradients_after(net, ["bottom_up"])
    assert [name for name, got in bottom_up.items() if got] == ["directions"]

    top_down = gradients_after(net, ["top_down"])
    assert top_down["backbone.features.0.weight"] and top_down["feature_bn.bias"]
    assert not top_down["fc8.weight"] and not top_down["directions"]
    assert not top_down["backbone.fc7.weight"]  # structure c: the CAM branch's fc6/fc7 are not used

    cam = gradients_after(net, ["cam"])
    assert cam["backbone.features.0.weight"] and cam["fc8.weight"]
    assert not cam["directions"] and not cam["top_down_classifier.weight"] and not cam["feature_bn.bias"]


def test_structure_d_adapts_the_cam_branch_fc_layers():
    net = make_net(top_down_structure="d").train()
    top_down = gradients_after(net, ["top_down"])
    assert top_down["backbone.fc6.weight"] and top_down["backbone.fc7.weight"]
    assert not hasattr(net, "fc6_ft")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"batch_norm": True},
        {"top_down_structure": "a", "bottom_up_feature": "fc6"},
        {"top_down_structure": "d"},
        {"top_down": False},
    ],
)
def test_parameter_groups_cover_trainable_parameters_once(kwargs):
    net = make_net(**kwargs)
    groups = net.parameter_groups(lr=1e-3, weight_decay=5e-4, new_layer_lr_mult=10)
    names = {id(p): n for n, p in net.named_parameters()}
    grouped = [names[id(p)] for g in groups for p in g["params"]]
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)
    assert len({g["name"] for g in groups}) == len(groups)
    assert not net.feature_bn.weight.requires_grad and "feature_bn.weight" not in grouped
    assert torch.all(net.feature_bn.weight == 1)
    by_param = {names[id(p)]: g for g in groups for p in g["params"]}
    assert by_param["fc8.weight"]["lr"] == pytest.approx(1e-2) and by_param["fc8.weight"]["lr_mult"] == 10
    assert by_param["fc8.bias"]["weight_decay"] == 0 and by_param["fc8.weight"]["weight_decay"] == 5e-4
    assert by_param["feature_bn.bias"]["weight_decay"] == 0 and by_param["feature_bn.bias"]["lr_mult"] == 1
    assert by_param["directions"]["weight_decay"] == 5e-4 and by_param["directions"]["lr"] == pytest.approx(1e-3)
    assert by_param["backbone.features.0.bias"]["weight_decay"] == 0
    if net.top_down:
        assert by_param["top_down_classifier.weight"]["lr_mult"] == 10
    if hasattr(net, "fc6_ft"):
        assert by_param["fc6_ft.weight"]["lr_mult"] == 1 and by_param["fc6_ft.bias"]["weight_decay"] == 0
    torch.optim.SGD(groups, lr=1e-3, momentum=0.9)  # accepted as is


def test_new_layer_initialisation_and_bn_settings():
    net = make_net()
    assert net.top_down_classifier.bias is None
    assert net.top_down_classifier.in_channels == 32 + 2 * 64  # conv5 + fc6_ft + fc7_ft at width 1/16
    assert net.feature_bn.momentum == pytest.approx(0.1) and net.feature_bn.eps == 1e-5
    assert torch.all(net.feature_bn.bias == 0) and torch.all(net.fc8.bias == 0)
    assert net.directions.std().item() == pytest.approx(0.01, rel=0.2)


def test_load_backbone_copies_fc6_fc7_into_the_top_down_branch():
    torch.manual_seed(1)
    source = VGG16DeepLab(WIDTH)
    state = source.state_dict()
    net = make_net()
    net.load_backbone(state)
    for name, value in state.items():
        torch.testing.assert_close(net.backbone.state_dict()[name], value)
    for layer in ("fc6", "fc7"):
        torch.testing.assert_close(getattr(net, f"{layer}_ft").weight, state[f"{layer}.weight"])
        torch.testing.assert_close(getattr(net, f"{layer}_ft").bias, state[f"{layer}.bias"])
    # Different input (fc6 features have 2x the channels of conv5): no copy, no error.
    other = make_net(bottom_up_feature="fc6")
    before = other.fc6_ft.weight.clone()
    other.load_backbone(state)
    torch.testing.assert_close(other.fc6_ft.weight, before)


def test_sign_buffer_is_updated_in_training_only_and_saved():
    net = make_net()
    assert "sign_flip.stored" in net.state_dict()
    images, labels, superpixels = batch()
    net.eval()
    with torch.no_grad():
        net(images, labels, superpixels)
    assert net.sign_flip.stored.abs().sum() == 0 and net.feature_bn.num_batches_tracked == 0

    probe = copy.deepcopy(net).train()
    torch.manual_seed(1)  # the same dropout draws in both passes
    with torch.no_grad():
        probe(images, labels, superpixels)
        # Reverse every direction this batch would leave at +1: each of them now turns to -1 on it.
        net.directions[probe.sign_flip.sign() > 0] *= -1
    net.train()
    torch.manual_seed(1)
    with torch.no_grad():
        out = net(images, labels, superpixels)
    stored = net.sign_flip.stored.clone()
    present = labels.sum(0) > 0
    assert torch.all(stored[present].sum(1) > 0) and stored[~present].abs().sum() == 0
    # The sign used is the one after this batch's update (a flipped class must exist for this to bite).
    sign = net.sign_flip.sign()
    assert (sign[present] < 0).any()
    torch.testing.assert_close(out["bottom_up"], out["bottom_up_raw"] * sign[None, :, None, None])

    restored = make_net()
    restored.load_state_dict(net.state_dict())
    torch.testing.assert_close(restored.sign_flip.stored, stored)


def test_forward_is_deterministic_on_cpu():
    images, labels, superpixels = batch()
    outputs = []
    for _ in range(2):
        net = make_net().train()
        with torch.no_grad():
            outputs.append(net(images, labels, superpixels))
    # Dropout draws from the global generator: reseed per run via make_net, so outputs match.
    for key, value in outputs[0].items():
        torch.testing.assert_close(value, outputs[1][key], rtol=0, atol=0)
