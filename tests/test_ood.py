"""W-OoD's ingredients on ICD's CAM branch (icd.ood), each against a transcription of the official operator written
here, and an OoD network trained end to end (icd.train with icd.ood)."""

from __future__ import annotations

import json
import math
import os
import subprocess

import numpy as np
import pytest
import torch
from torch import nn

from icd.ood import (
    class_prototypes,
    climb,
    distance_loss,
    frozen_batch_norm,
    kmeans,
    ood_classification_loss,
)
from tests.test_train import _train_command, icd_options, train
from tests.workflow_helpers import (
    assert_a_killed_run_resumes,
    differing_weights,
    kill_at_first_checkpoint,
    trained_weights,
)
from wsss.core.errors import ConfigError, DataError


def official_distance_loss(features, labels, prototypes, centres, push):
    """`tcc.py` L_M in numpy: Euclidean distances to every prototype and centre; the pulled ones summed over each
    image's classes; of the B*K centre distances, tau = the floor((1 - push) n)-th largest nonzero one, the pushed
    ones those strictly below it; the difference over B*K."""
    batch, clusters = len(features), len(centres)
    pull = sum(
        np.linalg.norm(features[b] - prototypes[c])
        for b in range(batch)
        for c in range(len(prototypes))
        if labels[b, c]
    )
    distances = np.array([np.linalg.norm(features[b] - centres[k]) for b in range(batch) for k in range(clusters)])
    nonzero = np.sort(distances[distances > 0])[::-1]
    tau = nonzero[math.floor((1 - push) * len(nonzero)) - 1]
    return (pull - distances[distances < tau].sum()) / (batch * clusters)


def test_the_distance_loss_is_the_official_pull_minus_the_nearest_pushes():
    rng = np.random.default_rng(0)
    features, prototypes, centres = rng.normal(size=(6, 5)), rng.normal(size=(3, 5)), rng.normal(size=(7, 5))
    labels = rng.random((6, 3)) < 0.5
    for push in (0.2, 0.5, 0.9):
        ours = distance_loss(
            torch.tensor(features), torch.tensor(labels), torch.tensor(prototypes), torch.tensor(centres), push
        )
        assert float(ours) == pytest.approx(official_distance_loss(features, labels, prototypes, centres, push))
    # Its gradient is the official loss's, by central differences (tau's selection is constant nearby).
    feature = torch.tensor(features[:2], requires_grad=True)
    distance_loss(feature, torch.tensor(labels[:2]), torch.tensor(prototypes), torch.tensor(centres), 0.2).backward()
    numeric = np.zeros_like(features[:2])
    for index in np.ndindex(numeric.shape):
        shifted = [features[:2].copy(), features[:2].copy()]
        shifted[0][index] += 1e-6
        shifted[1][index] -= 1e-6
        up, down = (official_distance_loss(x, labels[:2], prototypes, centres, 0.2) for x in shifted)
        numeric[index] = (up - down) / 2e-6
    assert np.allclose(feature.grad.numpy(), numeric, atol=1e-6)


def test_the_ood_classification_loss_is_a_bce_to_zero_over_the_kept_images():
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0], [0.1, 0.2, 0.3]])
    excluded = torch.tensor([False, True, False])  # the second image's top class is excluded
    expected = sum(np.log1p(np.exp(v)) for row in (logits[0], logits[2]) for v in row.tolist()) / 16
    assert float(ood_classification_loss(logits, excluded, id_batch_size=16)) == pytest.approx(expected)
    zeros = torch.zeros(3, 3)
    bce = nn.functional.binary_cross_entropy_with_logits(logits, zeros, reduction="none").sum(1)
    assert float(ood_classification_loss(logits, torch.zeros(3, dtype=torch.bool), 4)) == pytest.approx(
        float(bce.sum() / 4)
    )


def test_class_prototypes_are_the_mean_feature_of_each_classs_images():
    rng = np.random.default_rng(1)
    features, labels = rng.normal(size=(9, 4)), rng.random((9, 3)) < 0.5
    labels[:, 2] = False  # a class without images
    ours = class_prototypes(torch.tensor(features), torch.tensor(labels)).numpy()
    for c in range(2):
        assert np.allclose(ours[c], features[labels[:, c]].mean(0), atol=1e-6)
    assert not ours[2].any()


def test_kmeans_finds_separated_clusters_is_seeded_and_drops_empty_ones():
    rng = np.random.default_rng(2)
    truth = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    points = np.concatenate([centre + rng.normal(scale=0.1, size=(20, 2)) for centre in truth])
    centres = kmeans(torch.tensor(points), 3, seed=0).numpy()
    assert np.allclose(
        sorted(map(tuple, centres)),
        sorted(map(tuple, [points[i * 20 : i * 20 + 20].mean(0) for i in range(3)])),
        atol=1e-5,
    )
    assert torch.equal(kmeans(torch.tensor(points), 5, seed=3), kmeans(torch.tensor(points), 5, seed=3))
    # Four distinct points, asked for 6 clusters: at most four non-empty ones come back.
    few = torch.tensor([[0.0, 0], [1, 0], [0, 1], [1, 1]]).repeat(3, 1)
    assert len(kmeans(few, 6, seed=0)) <= 4


class TinyCamNet(nn.Module):
    """Backbone (conv + BatchNorm + ReLU, `fc7` features) and fc8: the part of ICDNet that climb() runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.bn, self.fc8 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1)

    def backbone(self, x):
        features = torch.relu(self.bn(self.conv(x)))
        return {"fc7": features, "fc7_activation": features}


def test_the_climb_is_one_max_normalised_step_up_the_top_logit_clipped_to_the_batch_range():
    net = TinyCamNet().train()
    images = torch.randn(2, 3, 5, 5)
    step = torch.tensor([0.3, 0.2, 0.1]).view(1, 3, 1, 1)
    statistics = net.bn.running_mean.clone()
    climbed = climb(net, images, step)
    # The same step written out: eval-mode BatchNorm, objective sum over images of the largest class logit.
    reference = TinyCamNet().eval()
    x = images.clone().requires_grad_(True)
    reference.fc8(reference.backbone(x)["fc7"]).mean((2, 3)).max(1).values.sum().backward()
    expected = (images + step * x.grad / x.grad.abs().max()).clamp(images.min(), images.max())
    assert torch.allclose(climbed, expected, atol=1e-6)
    assert torch.equal(net.bn.running_mean, statistics) and net.bn.training  # BatchNorm untouched, mode restored
    assert all(p.grad is None for p in net.parameters())  # no parameter gradient kept
    assert not climbed.requires_grad


def test_the_background_top_down_loss_is_the_bce_to_zero_of_the_adapted_scores_forward_gives():
    from icd.model import ICDNet
    from icd.ood import background_top_down_loss

    torch.manual_seed(0)
    net = ICDNet(num_classes=3, width=0.0625, batch_norm=True).eval()
    images = torch.randn(2, 3, 40, 40)
    adapted = net(images, torch.zeros(2, 3))["adapted"]
    expected = nn.functional.softplus(adapted).mean((1, 2, 3)).sum() / 8  # BCE against 0 is softplus
    assert float(background_top_down_loss(net, net.backbone(images), id_batch_size=8)) == pytest.approx(
        float(expected), rel=1e-5
    )


def test_the_background_bottom_up_loss_moves_only_the_directions_with_the_oriented_scores():
    from icd.model import ICDNet
    from icd.ood import background_bottom_up_loss

    torch.manual_seed(0)
    net = ICDNet(num_classes=3, width=0.0625, batch_norm=True).eval()
    net.sign_flip.stored.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))  # class 2 flipped
    images = torch.randn(2, 3, 40, 40)
    oriented = net(images, torch.zeros(2, 3))["bottom_up"]  # S: Ŝ with the sign flip applied
    assert oriented.shape[1] == 3
    expected = nn.functional.softplus(oriented).mean((1, 2, 3)).sum() / 8
    loss = background_bottom_up_loss(net, net.backbone(images), id_batch_size=8)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    learned = {name for name, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learned == {"directions"}


def test_frozen_batch_norm_keeps_statistics_and_restores_modes():
    net = TinyCamNet().train()
    before = net.bn.running_var.clone()
    with frozen_batch_norm(net):
        assert not net.bn.training
        net.backbone(torch.randn(2, 3, 5, 5))
    assert net.bn.training and torch.equal(net.bn.running_var, before)


@pytest.fixture(scope="module")
def with_ood_images(tiny_dataset, tmp_path_factory) -> dict:
    """The tiny dataset with an OoD set: its training images' backgrounds, cut out of the images' top rows and
    resized, listed as W-OoD's ood_list.txt would list them (one grey image among them)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ood")
    images = []
    for index, image_id in enumerate(tiny_dataset["splits"]["train_aug"][:10]):
        with Image.open(f"{tiny_dataset['voc_root']}/JPEGImages/{image_id}.jpg") as image:
            strip = image.crop((0, 0, image.width, 12)).resize((image.width, image.height))
            (strip.convert("L") if index == 0 else strip).save(root / f"ood_{index}.jpg")
        images.append(f"ood_{index}.jpg")
    return {**tiny_dataset, "ood": {"root": str(root), "list": "ood_list.txt", "images": images}}


def ood_settings(**overrides) -> dict:
    return {
        "start_epoch": 1,
        "classification_weight": 0.25,
        "climb_step": 4.0,
        "distance_weight": 0.007,
        "clusters": 4,
        "push_fraction": 0.2,
        "excluded_classes": [],
        "background_top_down_weight": 0.0,
        "background_bottom_up_weight": 0.0,
        **overrides,
    }


def test_an_ood_network_trains_as_the_plain_one_until_its_start_epoch_then_adds_both_losses(
    with_ood_images, prepared, tmp_path
):
    plain = train(tmp_path / "plain", with_ood_images, prepared, epochs=1)
    settings = ood_settings(background_top_down_weight=0.5, background_bottom_up_weight=2.0)
    with_ood = train(tmp_path / "ood", with_ood_images, prepared, epochs=2, ood=settings)
    first, second = with_ood["history"]
    assert first["loss_ood"] == first["loss_distance"] == first["loss_ood_top_down"] == first["loss_ood_bottom_up"] == 0
    assert second["loss_ood"] > 0 and second["loss_distance"] != 0
    assert second["loss_ood_top_down"] > 0 and second["loss_ood_bottom_up"] > 0
    for key in ("loss_cam", "loss_bottom_up", "loss_top_down"):  # epoch 1 is the plain network's epoch 1
        assert first[key] == plain["history"][0][key], key
    prototypes = torch.load(tmp_path / "ood" / "ood_prototypes.pt", weights_only=True)
    assert prototypes["fingerprint"] == with_ood["fingerprint"]
    assert prototypes["classes"].shape[0] == len(with_ood_images["classes"]) and len(prototypes["ood"]) <= 4
    # No OoD image reaches BatchNorm, the bottom-up loss or the sign statistics: with both OoD weights at zero (and
    # no dropout, so its forwards draw no random numbers) the network is the plain one, weights and statistics.
    plain_two = train(tmp_path / "plain_two", with_ood_images, prepared, epochs=2)
    silent = ood_settings(classification_weight=0.0, distance_weight=0.0)
    train(tmp_path / "silent", with_ood_images, prepared, epochs=2, ood=silent)
    silent_weights = trained_weights(tmp_path / "silent" / "model.pt")
    assert any("running_mean" in name for name in silent_weights) and "sign_flip.stored" in silent_weights
    assert differing_weights(silent_weights, trained_weights(tmp_path / "plain_two" / "model.pt")) == []
    assert plain_two["history"][1]["loss_cam"] != second["loss_cam"]  # while the OoD losses do train it


def test_a_network_of_one_w_ood_ingredient_computes_only_what_that_ingredient_reads(
    with_ood_images, prepared, tmp_path
):
    classification = ood_settings(distance_weight=0.0)
    history = train(tmp_path / "classification", with_ood_images, prepared, epochs=2, ood=classification)["history"]
    assert history[1]["loss_ood"] > 0 and history[1]["loss_distance"] == 0
    assert not (tmp_path / "classification" / "ood_prototypes.pt").exists()  # no prototypes without the distance
    distance = ood_settings(classification_weight=0.0)
    history = train(tmp_path / "distance", with_ood_images, prepared, epochs=2, ood=distance)["history"]
    assert history[1]["loss_ood"] == 0 and history[1]["loss_distance"] != 0
    assert (tmp_path / "distance" / "ood_prototypes.pt").exists()


def test_an_ood_network_needs_ood_images_and_resumes_from_its_own_prototypes(
    tiny_dataset, with_ood_images, prepared, tmp_path
):
    with pytest.raises(ConfigError, match=r"icd.ood is set .* no out-of-distribution images. Set data.ood_root"):
        train(tmp_path / "none", tiny_dataset, prepared, epochs=1, ood=ood_settings())
    weights, shards = prepared
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(with_ood_images))
    options = icd_options(epochs=3, ood=ood_settings(start_epoch=0))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full = tmp_path / "full"
    subprocess.run(_train_command(dataset_file, shards, weights, full, options), check=True, env=env)
    # Killed after its first epoch, a run resumes after the start epoch: it reads the prototypes it computed then.
    assert_a_killed_run_resumes(
        lambda out_dir: _train_command(dataset_file, shards, weights, out_dir, options),
        tmp_path / "killed",
        full,
        "epoch",
        env,
    )
    # Resumed after the start epoch without them (or with another run's), it stops, naming the file.
    kill_at_first_checkpoint(
        _train_command(dataset_file, shards, weights, tmp_path / "lost", options), tmp_path / "lost", env
    )
    (tmp_path / "lost" / "ood_prototypes.pt").unlink()
    with pytest.raises(DataError, match=r"ood_prototypes.pt: the W-OoD prototypes of the run being resumed"):
        train(tmp_path / "lost", with_ood_images, prepared, epochs=3, ood=ood_settings(start_epoch=0))
