"""The ResNet101 stand-in for ImageNet weights: torchvision layout, learning, determinism, resume, bad input."""

from __future__ import annotations

import copy
import logging
import shutil

import numpy as np
import pytest
import torch

import deeplab.classifier as classifier
from deeplab.classifier import ResNet101Classifier, train_classifier
from deeplab.model import DeepLabResNet101, load_imagenet_weights
from tests.torchvision_layouts import resnet101_torchvision_shapes
from wsss.core.errors import ConfigError
from wsss.data.classes import NUM_CLASSES, NUM_FOREGROUND
from wsss.data.io import read_rgb, write_jpeg
from wsss.data.transforms import bilinear_resize
from wsss.data.voc import VOCPaths
from wsss.nets.normalisation import named, recorded_normalisation
from wsss.nets.resnet import Bottleneck, ResNet101
from wsss.training import cam_loss, multi_hot

WIDTH = 0.0625
SETTINGS = dict(
    width=WIDTH,
    seed=0,
    iterations=8,
    batch_size=4,
    lr=0.05,
    momentum=0.9,
    weight_decay=5e-4,
    poly_power=0.9,
    crop_size=48,
    scale_range=(0.75, 1.25),
    flip=True,
    log_interval=2,
    checkpoint_interval=4,
    workers=0,
    normalisation="torchvision",
    progress=False,
)


def _train(path, dataset, **overrides) -> dict:
    return train_classifier(path, dataset=dataset, **{**SETTINGS, **overrides})


def _state(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)


def test_the_saved_file_is_a_torchvision_resnet101_and_loads_into_deeplab(tiny_dataset, tmp_path, one_torch_thread):
    _train(tmp_path / "resnet101.pth", tiny_dataset, iterations=2)
    state = _state(tmp_path / "resnet101.pth")
    assert set(state) == set(resnet101_torchvision_shapes())  # every key torchvision has, fc included, no other
    assert recorded_normalisation(state) == "torchvision"  # in _metadata, where strict loading does not see it
    assert state["fc.weight"].shape == (20, ResNet101(width=WIDTH).out_channels)

    model = DeepLabResNet101(width=WIDTH, num_classes=NUM_CLASSES)
    load_imagenet_weights(model, tmp_path / "resnet101.pth")  # strict: raises on any missing/unexpected key
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items() if not key.startswith("fc."))
    with pytest.raises(ConfigError, match="width-0.125"):  # a stand-in of another width is refused by name
        load_imagenet_weights(DeepLabResNet101(width=0.125, num_classes=NUM_CLASSES), tmp_path / "resnet101.pth")


def test_classifier_geometry_is_torchvision_and_blocks_start_as_the_identity():
    net = ResNet101Classifier(WIDTH, NUM_FOREGROUND).eval()
    assert net.backbone(torch.zeros(1, 3, 64, 96)).shape[-2:] == (2, 3)  # stride 32, not DeepLab's 8
    block = net.backbone.layer3[5]
    assert isinstance(block, Bottleneck) and block.downsample is None
    features = torch.rand(2, block.conv1.in_channels, 5, 5)  # post-ReLU input: the identity returns it unchanged
    assert torch.equal(block(features), features)
    assert not torch.equal(ResNet101(WIDTH).eval().layer3[5](features), features)  # DeepLab's own init is not


def test_training_lowers_the_loss(tiny_dataset, tmp_path, one_torch_thread):
    metrics = _train(tmp_path / "resnet101.pth", tiny_dataset, iterations=40, log_interval=4, checkpoint_interval=40)
    losses = [record["loss"] for record in metrics["history"]]
    assert [record["iteration"] for record in metrics["history"]] == list(range(4, 41, 4))
    assert np.mean(losses[-3:]) < 0.6 * losses[0]

    # Independently of the training log: the saved weights' loss on un-augmented training images, against
    # the same network at initialisation.
    ids = tiny_dataset["splits"]["train_aug"][:8]
    paths = VOCPaths.create(tiny_dataset["voc_root"])
    images = np.stack([bilinear_resize(read_rgb(paths.image(i)), 48, 48) for i in ids])
    targets = torch.from_numpy(np.stack([multi_hot(tiny_dataset["labels"][i], NUM_FOREGROUND) for i in ids]))
    trained, initial = ResNet101Classifier(WIDTH, NUM_FOREGROUND), ResNet101Classifier(WIDTH, NUM_FOREGROUND)
    state = _state(tmp_path / "resnet101.pth")
    trained.backbone.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
    trained.head.load_state_dict({"weight": state["fc.weight"], "bias": state["fc.bias"]})
    with torch.no_grad():
        x = named("torchvision")(images)
        assert cam_loss(trained.eval()(x), targets) < 0.5 * cam_loss(initial.eval()(x), targets)


def test_a_fixed_seed_gives_identical_weights_and_an_interrupted_run_resumes_to_them(
    tiny_dataset, tmp_path, caplog, one_torch_thread, monkeypatch
):
    first, again = _train(tmp_path / "a.pth", tiny_dataset), _train(tmp_path / "b.pth", tiny_dataset)
    expected = _state(tmp_path / "a.pth")
    assert all(torch.equal(expected[key], value) for key, value in _state(tmp_path / "b.pth").items())
    assert [r["loss"] for r in again["history"]] == [r["loss"] for r in first["history"]]
    _train(tmp_path / "c.pth", tiny_dataset, seed=1)
    assert not torch.equal(_state(tmp_path / "c.pth")["conv1.weight"], expected["conv1.weight"])

    class Killed(Exception):
        pass

    real_save = classifier.save_checkpoint

    def save_then_die(*args, **kwargs):
        real_save(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(classifier, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        _train(tmp_path / "resumed.pth", tiny_dataset)
    assert not (tmp_path / "resumed.pth").exists()
    assert torch.load(tmp_path / "resumed.checkpoint.pt", weights_only=True)["epoch"] == 3  # after iteration 4
    monkeypatch.setattr(classifier, "save_checkpoint", real_save)
    with caplog.at_level(logging.INFO, logger="wsss.core.checkpoints"):
        resumed = _train(tmp_path / "resumed.pth", tiny_dataset)
    assert "after iteration 4" in caplog.text  # really resumed, not retrained to the same weights
    assert all(torch.equal(expected[key], value) for key, value in _state(tmp_path / "resumed.pth").items())
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in first["history"]]


def test_a_checkpoint_trained_on_other_images_is_not_resumed_and_the_run_equals_a_fresh_one(
    tiny_dataset, tmp_path, caplog, one_torch_thread
):
    """The dataset's images replaced in place (same ids, labels and config): the stand-in retrains from scratch."""
    dataset = {**tiny_dataset, "voc_root": str(tmp_path / "VOC2012")}
    shutil.copytree(tiny_dataset["voc_root"], dataset["voc_root"])

    def train(name: str) -> dict[str, torch.Tensor]:
        _train(tmp_path / name, dataset, iterations=4)
        return _state(tmp_path / name)

    old = train("run.pth")
    for image_id in dataset["splits"]["train_aug"]:
        path = VOCPaths.create(dataset["voc_root"]).image(image_id)
        write_jpeg(path, 255 - read_rgb(path))
    fresh = train("fresh.pth")
    with caplog.at_level(logging.INFO, logger="wsss.core.checkpoints"):
        rerun = train("run.pth")
    assert "was trained on other inputs (changed: images); training from scratch" in caplog.text
    assert "resuming" not in caplog.text
    assert any(not torch.equal(old[key], rerun[key]) for key in old)
    assert all(torch.equal(fresh[key], rerun[key]) for key in fresh)


def test_bad_settings_and_unlabelled_images_fail_clearly(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match="checkpoint_interval 3 is not a multiple of resnet_pretrain.log_interval 2"):
        _train(tmp_path / "x.pth", tiny_dataset, checkpoint_interval=3)
    unlabelled = copy.deepcopy(tiny_dataset)
    first = unlabelled["splits"]["train_aug"][0]
    del unlabelled["labels"][first]
    with pytest.raises(ConfigError, match=rf"1 training image\(s\) have no image-level labels \(first: {first}\)"):
        _train(tmp_path / "x.pth", unlabelled)
    assert not list(tmp_path.iterdir())  # nothing written
