"""A stand-in for ImageNet ResNet101 weights on synthetic data: ResNet101 trained to name each image's objects.

DeepLab's ResNet101 starts from ImageNet weights, which already recognise VOC's objects; from random
init it stays at chance in a CPU budget, even on ground-truth masks. No ImageNet weights exist for the
synthetic classes, so `train_classifier` teaches the same backbone (`wsss.nets.resnet`, same width) to
recognise them from what weak supervision allows: the training split's image-level labels, never masks.
Global average pooling + a linear layer, the CAM branch's multi-label loss (`wsss.training.cam_loss`), SGD
with momentum, weight decay on weights only, poly decay per iteration, DeepLab's random scale, flip and
crop (`deeplab.data.augment`) on an endless sample stream seeded by (seed, position) as DeepLab's, so a
run resumed from its checkpoint ends with the same weights on CPU.

The file it writes is a torchvision `resnet101` state dict (`fc.*` is this 20-way classifier instead of
ImageNet's 1000-way one), so DeepLab loads it through `load_imagenet_weights`, the path real weights take.
It is trained on the input `normalisation` (the workflow's default: torchvision's, that of the weights
it stands in for) and records it in the state dict's `_metadata` (`wsss.nets.normalisation`), where
torchvision's strict loading does not see it.
"""

from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from deeplab.data import SeedTrainingSet, augment
from deeplab.model import parameter_groups
from wsss.core.checkpoints import check_intervals, fingerprint, process_device, save_checkpoint
from wsss.core.digests import training_inputs
from wsss.core.errors import ConfigError
from wsss.core.files import save_torch
from wsss.data.io import read_rgb
from wsss.nets.normalisation import from_scratch, with_record
from wsss.nets.resnet import ResNet101
from wsss.training import TrainingLoop, cam_loss, multi_hot, rank_accuracy

log = logging.getLogger(__name__)


class ResNet101Classifier(nn.Module):
    """ResNet101 trunk, global average pooling and `fc`: torchvision's classifier layout, multi-label logits."""

    def __init__(self, width: float, num_classes: int) -> None:
        super().__init__()
        self.backbone = ResNet101(width=width, output_stride=32, zero_init_residual=True)
        self.head = nn.Linear(self.backbone.out_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images).mean(dim=(2, 3)))

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """Backbone keys as torchvision names them, the classifier as `fc.*`."""
        state = {**self.backbone.state_dict(), **{f"fc.{k}": v for k, v in self.head.state_dict().items()}}
        return {key: value.detach().cpu().clone() for key, value in state.items()}


class LabelledImageStream(SeedTrainingSet):
    """The training split's images with their image-level labels (multi-hot), augmented like DeepLab's samples."""

    def __init__(self, dataset: dict, **options) -> None:
        super().__init__(dataset, None, **options)
        missing = [image_id for image_id in self.ids if not dataset["labels"].get(image_id)]
        if missing:
            raise ConfigError(
                f"{len(missing)} training image(s) have no image-level labels (first: {missing[0]}): "
                "the dataset report is incomplete. Rerun validate-data."
            )
        self.labels = {image_id: dataset["labels"][image_id] for image_id in self.ids}

    def __getitem__(self, draw: int):
        image_id = self.image_at(draw)
        image, _ = augment(
            np.random.default_rng([self.seed, draw]), read_rgb(self.paths.image(image_id)), None, **self.options
        )
        return torch.from_numpy(image), torch.from_numpy(multi_hot(self.labels[image_id], self.classes.num_foreground))


def train_classifier(
    out_path,
    *,
    dataset: dict,
    width: float,
    seed: int,
    iterations: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    poly_power: float,
    crop_size: int,
    scale_range,
    flip: bool,
    log_interval: int,
    checkpoint_interval: int,
    workers: int,
    normalisation: str,
    progress: bool = True,
) -> dict:
    """Train the classifier on input `normalisation`, write its torchvision-format state dict recording it to
    `out_path`; return the metrics.

    A checkpoint (`<out_path stem>.checkpoint.pt` beside it) every `checkpoint_interval` iterations
    lets a killed run resume; `history` holds the mean loss and rank accuracy (a present class counts
    when it ranks within the image's top |labels| logits, as ICD's monitor) every `log_interval`.
    """
    check_intervals("resnet_pretrain", checkpoint_interval, log_interval)
    out_path = Path(out_path)
    settings = {
        "width": width,
        "seed": seed,
        "iterations": iterations,
        "batch_size": batch_size,
        "lr": lr,
        "momentum": momentum,
        "weight_decay": weight_decay,
        "poly_power": poly_power,
        "crop_size": crop_size,
        "scale_range": list(scale_range),
        "flip": flip,
        "normalisation": normalisation,
    }
    run_id = fingerprint(settings)
    device = process_device(0)
    normalise = from_scratch(normalisation, "resnet101")  # auto: torchvision's, the input of what it stands in for
    data = LabelledImageStream(
        dataset, seed=seed, crop_size=crop_size, scale_range=scale_range, flip=flip, pad_rgb=normalise.pad_rgb
    )

    torch.manual_seed(seed)
    net = ResNet101Classifier(width, data.classes.num_foreground).to(device)
    optimizer = torch.optim.SGD(
        parameter_groups(net, weight_decay=weight_decay, head_lr_mult=1.0, head_bias_lr_mult=1.0),
        lr=lr,
        momentum=momentum,
    )
    loop = TrainingLoop(
        net,
        optimizer,
        unit="iteration",
        units=iterations,
        lr=lr,
        poly_power=poly_power,
        reseed=None,  # no dropout: nothing draws from torch's global RNG while it trains
        log_interval=log_interval,
        checkpoint_interval=checkpoint_interval,
        log=log,
        name="classifier",
        advice="Lower resnet_pretrain.lr.",
        desc="resnet101 classifier",
        progress=progress,
        save_checkpoint=save_checkpoint,
    )
    checkpoint = out_path.with_name(f"{out_path.stem}.checkpoint.pt")
    start = loop.resume(checkpoint, run_id, training_inputs(dataset), normalise.name)
    loader = DataLoader(
        data,
        batch_size=batch_size,
        sampler=range(start * batch_size, iterations * batch_size),
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    batches = iter(loader)

    def step(batch, iteration: int, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, targets = batch
        logits = net(normalise(images).to(device))
        targets = targets.to(device)
        correct, count = rank_accuracy(logits.detach(), targets)
        return cam_loss(logits, targets), {"correct": correct, "labels": count}

    def record(done: int, totals: dict[str, float], current_lr: float, seconds: float) -> dict:
        return {
            "loss": totals["loss"] / totals["steps"],
            "rank_accuracy": totals["correct"] / max(totals["labels"], 1),
            "lr": current_lr,
            "seconds": seconds,
        }

    started = time.time()
    history = loop.run(lambda iteration: islice(batches, 1), step, record)
    save_torch(with_record(net.torchvision_state_dict(), normalise.name), out_path)
    return {
        "settings": settings,
        "history": history,
        "seconds": round(time.time() - started, 1),
        "final_loss": history[-1]["loss"],
        "final_rank_accuracy": history[-1]["rank_accuracy"],
    }
