"""DeepLab training: augmentation, the sample stream, loss decrease, poly lr, SIGKILL + resume, divergence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab.data import SeedTrainingSet, augment
from deeplab.train import _stream_positions, segmentation_loss, shrink_labels, train_deeplab
from tests.workflow_helpers import (
    assert_a_killed_run_resumes,
    assert_divergence_keeps_the_checkpoint,
    differing_weights,
    run_under_torchrun,
    trained_weights,
)
from wsss.core.config import load_config
from wsss.core.errors import ConfigError, DataError
from wsss.data.classes import IGNORE_LABEL
from wsss.data.io import read_mask, write_mask
from wsss.data.voc import VOCPaths
from wsss.training import poly_lr

MODEL_SECTION = {"batch_norm": True}


def deeplab_options(**overrides) -> dict:
    section = {
        **load_config()["deeplab"],
        "width": 0.0625,
        "freeze_bn": False,
        "batch_size": 4,
        "crop_size": 48,
        "workers": 0,
        "log_interval": 2,
        "checkpoint_interval": 4,
        "lr": {"vgg16": 0.01, "resnet101": 0.01},
    }
    section.update(overrides)
    return {"deeplab": section, "model": MODEL_SECTION, "normalisation": "minus127", "seed": 0}


def train(folder, dataset: dict, labels_root=None, backbone: str = "vgg16", **overrides) -> dict:
    """train_deeplab in `folder`, from random weights, with deeplab_options(**overrides)."""
    return train_deeplab(
        folder,
        dataset=dataset,
        labels_root=labels_root,
        weights=None,
        backbone=backbone,
        progress=False,
        **deeplab_options(**overrides),
    )


def test_augment_pads_labels_with_ignore_and_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(0)
    image = np.zeros((20, 30, 3), np.uint8)
    image[:, 15:] = 255
    labels = np.zeros((20, 30), np.uint8)
    labels[:, 15:] = 7
    for _ in range(10):
        crop, crop_labels = augment(
            rng, image, labels, crop_size=40, scale_range=(0.5, 1.5), flip=True, pad_rgb=np.array([1, 2, 3], np.uint8)
        )
        assert crop.shape == (40, 40, 3) and crop_labels.shape == (40, 40)
        padding = crop_labels == IGNORE_LABEL
        assert padding.any()  # the image is smaller than the crop at every scale up to 1.5 in height
        assert (crop[padding] == [1, 2, 3]).all()
        # Bilinear resizing blends the one boundary column; a misaligned flip or crop would swap whole halves.
        assert crop[crop_labels == 7].mean() > 240 and crop[crop_labels == 0].mean() < 15


def test_the_sample_stream_splits_each_batch_over_accumulation_steps_and_ranks_without_overlap():
    batch, micro, accumulation, world = 8, 2, 2, 2
    per_rank = [_stream_positions(3, 5, batch, micro, accumulation, world, rank) for rank in range(world)]
    assert sorted(per_rank[0] + per_rank[1]) == list(range(3 * batch, 5 * batch))
    assert per_rank[0][:micro] == [24, 25] and per_rank[1][:micro] == [26, 27]


def test_every_epoch_of_the_stream_visits_each_image_once(tiny_dataset):
    data = SeedTrainingSet(tiny_dataset, None, seed=3, crop_size=32, scale_range=(1, 1), flip=False, pad_rgb=[0, 0, 0])
    n = len(data)
    first, second = [data.image_at(k) for k in range(n)], [data.image_at(k) for k in range(n, 2 * n)]
    assert sorted(first) == sorted(second) == sorted(tiny_dataset["splits"]["train_aug"]) and first != second


def test_a_label_map_holding_a_value_beyond_the_classes_stops_with_its_file(tiny_dataset, tmp_path):
    """The loss would index its logits with the label: a seed map of another dataset's classes is named instead."""
    split = tiny_dataset["roles"]["train"]
    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    for image_id in tiny_dataset["splits"][split]:
        mask = read_mask(paths.ground_truth(split, image_id))
        write_mask(tmp_path / f"{image_id}.png", np.where(mask == 0, 0, 30).astype(np.uint8))
    data = SeedTrainingSet(
        tiny_dataset, tmp_path, seed=3, crop_size=32, scale_range=(1, 1), flip=False, pad_rgb=[0, 0, 0]
    )
    with pytest.raises(DataError, match=rf"{data.image_at(0)}.png: label mask holds values \[30\] outside 0..20"):
        data[0]


def test_loss_ignores_255_and_is_zero_without_labelled_pixels():
    logits = torch.randn(1, 21, 4, 4)
    labels = torch.full((1, 8, 8), IGNORE_LABEL)
    assert segmentation_loss(logits, labels).item() == 0.0
    labels[0, :4] = 3  # rows 1 and 3 are the centres of logit rows 0 and 1
    expected = -logits.log_softmax(dim=1)[0, 3, :2].mean()
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("full,size", [((96, 96), (12, 12)), ((97, 130), (13, 17)), ((41, 23), (41, 23))])
def test_labels_shrink_as_pil_nearest(full, size):
    """The reference is PIL's NEAREST resize, what deeplab-pytorch's resize_labels runs."""
    labels = torch.randint(0, 21, (2, *full), generator=torch.Generator().manual_seed(sum(full)))
    expected = [
        np.asarray(Image.fromarray(m.numpy().astype(np.uint8)).resize(size[::-1], Image.NEAREST)) for m in labels
    ]
    np.testing.assert_array_equal(shrink_labels(labels, size).numpy(), np.stack(expected))


def _train_command(dataset_file, out_dir, options, labels_root=None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "deeplab",
        "train-deeplab",
        "--dataset",
        str(dataset_file),
        "--backbone",
        "vgg16",
        "--options",
        json.dumps(options),
        "--out-dir",
        str(out_dir),
    ]
    return command + (["--labels-root", str(labels_root)] if labels_root else [])


@pytest.mark.slow
def test_training_lowers_the_loss_and_a_killed_run_resumes_to_identical_weights(tiny_dataset, tmp_path):
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(tiny_dataset))
    options = deeplab_options(iterations=40)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    full = tmp_path / "full"
    subprocess.run(_train_command(dataset_file, full, options), check=True, env=env, capture_output=True)
    history = json.loads((full / "history.json").read_text())
    assert [r["iteration"] for r in history] == list(range(2, 41, 2))
    assert np.mean([r["loss"] for r in history[-3:]]) < np.mean([r["loss"] for r in history[:3]])
    assert history[4]["lr"] == pytest.approx(poly_lr(0.01, 9, 40, 0.9))  # record at iteration 10: the 10th lr

    assert_a_killed_run_resumes(
        lambda out_dir: _train_command(dataset_file, out_dir, options), tmp_path / "killed", full, "iteration", env
    )


def test_a_diverging_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(
    tiny_dataset, tmp_path, one_torch_thread
):
    assert_divergence_keeps_the_checkpoint(
        partial(train, tmp_path, tiny_dataset, iterations=4), tmp_path / "checkpoint.pt", lr={"vgg16": 1e12}
    )


def test_bad_settings_and_bad_seeds_fail_clearly(tiny_dataset, tmp_path, one_torch_thread):
    with pytest.raises(ConfigError, match="does not split into 3 accumulation step"):
        train(tmp_path, tiny_dataset, iterations=2, accumulation_steps=3)
    with pytest.raises(ConfigError, match="not a multiple of deeplab.log_interval"):
        train(tmp_path, tiny_dataset, iterations=2, checkpoint_interval=3)
    seeds = tmp_path / "seeds"
    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    first, *others = tiny_dataset["splits"]["train_aug"]
    write_mask(seeds / f"{first}.png", np.zeros((5, 7), np.uint8))
    for image_id in others:
        write_mask(seeds / f"{image_id}.png", read_mask(paths.ground_truth("train_aug", image_id)))
    # Checked before training: one wrong seed among good ones stops the run before any checkpoint.
    with pytest.raises(DataError, match=rf"1 seed\(s\).*\n  .*{first}\.png: label map is 7x5 but its image is"):
        train(tmp_path / "run", tiny_dataset, seeds, iterations=2, checkpoint_interval=1, log_interval=1)
    assert not (tmp_path / "run" / "checkpoint.pt").exists() and not (tmp_path / "run" / "model.pt").exists()


def test_a_checkpoint_trained_on_other_seeds_is_not_resumed_and_the_run_equals_a_fresh_one(
    tiny_dataset, tmp_path, one_torch_thread, caplog
):
    """The seed folder rewritten in place (a new seeds.threshold): same config and path, other label bytes."""
    seeds = tmp_path / "seeds"
    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    ground_truth = {i: read_mask(paths.ground_truth("train_aug", i)) for i in tiny_dataset["splits"]["train_aug"]}

    def train_on(out_dir: str, transform) -> dict:
        for image_id, mask in ground_truth.items():
            write_mask(seeds / f"{image_id}.png", transform(mask))
        train(tmp_path / out_dir, tiny_dataset, seeds, iterations=4)
        return trained_weights(tmp_path / out_dir / "model.pt")

    def sparser(mask):
        """The seeds of a stricter threshold: the left third of every image unlabelled."""
        mask = mask.copy()
        mask[:, : mask.shape[1] // 3] = IGNORE_LABEL
        return mask

    old = train_on("run", lambda mask: mask)
    fresh = train_on("fresh", sparser)
    with caplog.at_level("INFO"):
        rerun = train_on("run", sparser)
    assert "was trained on other inputs (changed: labels); training from scratch" in caplog.text
    assert "resuming" not in caplog.text
    assert differing_weights(rerun, old) and not differing_weights(rerun, fresh)


def test_accumulated_micro_batches_train_resnet101_with_a_seed_folder(tiny_dataset, tmp_path, one_torch_thread):
    seeds = tmp_path / "seeds"
    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    for image_id in tiny_dataset["splits"]["train_aug"]:
        write_mask(seeds / f"{image_id}.png", read_mask(paths.ground_truth("train_aug", image_id)))
    result = train(
        tmp_path / "run", tiny_dataset, seeds, backbone="resnet101", iterations=2, accumulation_steps=2, head="aspp"
    )
    assert len(result["history"]) == 1 and np.isfinite(result["history"][0]["loss"])
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert json.loads(saved["network"])["head"] == "aspp" and "head.branches.3.weight" in saved["model"]


@pytest.mark.slow
def test_distributed_training_with_two_processes(tiny_dataset, tmp_path):
    """torchrun with 2 CPU processes (gloo): each reads half of every batch, rank 0 writes the outputs."""
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(tiny_dataset))
    result = run_under_torchrun(
        _train_command(dataset_file, tmp_path / "out", deeplab_options(iterations=2)), port=29527
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert [r["iteration"] for r in history] == [2] and np.isfinite(history[0]["loss"])
    assert "head.weight" in torch.load(tmp_path / "out" / "model.pt", weights_only=True)["model"]
