"""DeepLab training on seed label maps (255 = ignore), by iterations, with checkpoint and resume.

DeepLab's recipe: SGD with momentum, weight decay except on biases, the head at 10x (weights) and 20x
(biases) the base lr, poly decay per iteration, random scale/flip/crop. A batch can be split into
`accumulation_steps` micro-batches whose gradients add up (for short GPU memory), and over several
processes under torchrun (DDP). The loss is the cross-entropy at the logits' resolution (1/8 of the
crop) against the labels shrunk to it (`shrink_labels`), averaged over the labelled pixels.

The loop is `wsss.training.TrainingLoop`, counting iterations (checkpoint, resume, reseeding, DDP, history;
this module gives it the sample stream, the step and the record): every random draw is a function of
(seed, iteration) - the samples through `SeedTrainingSet`, dropout by reseeding each iteration - so a run
killed and restarted from its last checkpoint ends with the same weights as an uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import logging
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from deeplab.data import SeedTrainingSet
from deeplab.model import LARGEFOV_DILATION, NETWORK_KEYS, build_model, load_imagenet_weights, parameter_groups
from wsss.core.checkpoints import check_intervals, distributed, fingerprint, process_device, save_trained
from wsss.core.digests import file_digest, files_digest, training_inputs
from wsss.core.errors import ConfigError
from wsss.data.classes import IGNORE_LABEL, ClassList
from wsss.data.transforms import nearest_indices
from wsss.nets.normalisation import from_scratch, weights_normalisation
from wsss.training import TrainingLoop

log = logging.getLogger(__name__)


def shrink_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x H x W labels at `size`: each cell takes the label nearest its centre (`nearest_indices`, as PIL's
    NEAREST resize, which deeplab-pytorch's `resize_labels` calls)."""
    rows, cols = (
        torch.from_numpy(nearest_indices(full, out)).to(labels.device)
        for out, full in zip(size, labels.shape[-2:], strict=True)
    )
    return labels[:, rows[:, None], cols[None, :]]


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy at the logits' resolution against the labels shrunk to it (`shrink_labels`), averaged over
    labelled cells (0 if none).

    DeepLab v1/v2 train this way (Caffe's label `Interp` with shrink factor 8; deeplab-pytorch resizes the
    labels to the logits, never the logits to the labels): upsampling 21-channel logits to the crop and taking
    the softmax there cost a fifth of a CPU training step, for a loss on 64 times more pixels that the stride-8
    network cannot place more finely anyway.
    """
    small = shrink_labels(labels, tuple(logits.shape[-2:]))
    total = F.cross_entropy(logits.float(), small, ignore_index=IGNORE_LABEL, reduction="sum")
    return total / (small != IGNORE_LABEL).sum().clamp(min=1)


def network_options(backbone: str, deeplab: dict, model: dict) -> dict:
    """What defines the network of one backbone: stored with the weights so inference rebuilds it. `model`: the
    ICD backbone's batch_norm and, for VGG16, the fc6 dilation its weights were trained at (deeplab.workflow)."""
    return {
        "backbone": backbone,
        "head": deeplab["head"],
        "width": deeplab["width"],
        "batch_norm": backbone == "vgg16" and bool(model["batch_norm"]),
        "fc6_dilation": model.get("fc6_dilation", LARGEFOV_DILATION),
        "freeze_bn": deeplab["freeze_bn"],
    }


def _micro_batch(batch_size: int, accumulation: int, world: int) -> int:
    if batch_size % (accumulation * world):
        raise ConfigError(
            f"deeplab.batch_size {batch_size} does not split into {accumulation} accumulation step(s) x {world} "
            "process(es). Choose a batch size divisible by accumulation_steps x the number of GPUs."
        )
    return batch_size // (accumulation * world)


def _stream_positions(
    start: int, iterations: int, batch_size: int, micro: int, accumulation: int, world: int, rank: int
) -> list[int]:
    """Training-stream positions this rank reads, micro-batch by micro-batch, from iteration `start` on."""
    positions = []
    for iteration in range(start, iterations):
        for step in range(accumulation):
            first = iteration * batch_size + (step * world + rank) * micro
            positions.extend(range(first, first + micro))
    return positions


def train_deeplab(
    out_dir,
    *,
    dataset: dict,
    labels_root,
    weights,
    backbone: str,
    deeplab: dict,
    model: dict,
    normalisation: str,
    seed: int,
    progress: bool = True,
) -> dict:
    """Train one DeepLab; write `checkpoint.pt` every `checkpoint_interval` iterations, then `model.pt`
    and `history.json` (iteration, mean loss since the last record, lr every `log_interval`).

    `labels_root`: folder of `<id>.png` seeds, or None for the training split's ground truth. `weights`:
    ImageNet (or stand-in) backbone weights, or None for a random initialisation. `deeplab` and `model`
    are the config sections of those names (`model`: the ICD backbone's options, for VGG16's batch_norm).
    `normalisation`: the input the weights expect (checked against their file; a random initialisation
    takes it as given); crops are padded with its zero, and the checkpoints and model record it.
    """
    out_dir = Path(out_dir)
    rank, world = distributed()
    device = process_device(rank)
    network = network_options(backbone, deeplab, model)
    iterations, batch_size = deeplab["iterations"], deeplab["batch_size"]
    accumulation = deeplab["accumulation_steps"]
    micro = _micro_batch(batch_size, accumulation, world)
    check_intervals("deeplab", deeplab["checkpoint_interval"], deeplab["log_interval"])
    normalise = (
        from_scratch(normalisation, backbone)
        if weights is None
        else weights_normalisation(weights, normalisation, key=f"deeplab.normalisation.{backbone}")
    )
    options = {
        "network": network,
        "deeplab": deeplab,
        "seed": seed,
        "weights": str(weights),
        "labels": str(labels_root),
        "normalisation": normalise.name,
    }
    run_id = fingerprint(options)

    data = SeedTrainingSet(
        dataset,
        labels_root,
        seed=seed,
        crop_size=deeplab["crop_size"],
        scale_range=deeplab["scale_range"],
        flip=deeplab["flip"],
        pad_rgb=normalise.pad_rgb,
    )
    data.check_seed_sizes(progress and rank == 0)

    torch.manual_seed(seed)
    num_classes = ClassList.of_dataset(dataset).num_classes
    net = build_model(num_classes=num_classes, **{key: network[key] for key in NETWORK_KEYS})
    if weights is not None:
        load_imagenet_weights(net, weights)
    else:
        log.warning("no %s weights given: the backbone starts from a random initialisation", backbone)
    if network["freeze_bn"]:
        net.freeze_batch_norm()
    net.to(device)
    base_lr = deeplab["lr"][backbone]
    groups = parameter_groups(
        net,
        weight_decay=deeplab["weight_decay"],
        head_lr_mult=deeplab["head_lr_mult"],
        head_bias_lr_mult=deeplab["head_bias_lr_mult"],
    )
    optimizer = torch.optim.SGD(groups, lr=base_lr, momentum=deeplab["momentum"])

    inputs = training_inputs(
        dataset,
        labels=files_digest(map(data.label_path, data.ids)),
        weights=file_digest(weights) if weights is not None else "none",
    )
    loop = TrainingLoop(
        net,
        optimizer,
        unit="iteration",
        units=iterations,
        accumulation=accumulation,
        lr=base_lr,
        poly_power=deeplab["poly_power"],
        reseed=seed,
        log_interval=deeplab["log_interval"],
        checkpoint_interval=deeplab["checkpoint_interval"],
        log=log,
        name="DeepLab",
        advice=f"Lower deeplab.lr.{backbone} or check the seeds.",
        desc=f"deeplab {backbone}",
        progress=progress,
    )
    start = loop.resume(out_dir / "checkpoint.pt", run_id, inputs, normalise.name)
    loader = DataLoader(
        data,
        batch_size=micro,
        sampler=_stream_positions(start, iterations, batch_size, micro, accumulation, world, rank),
        num_workers=deeplab["workers"],
        pin_memory=device.type == "cuda",
    )
    micro_batches = iter(loader)
    amp = bool(deeplab["amp"]) and device.type == "cuda"

    def step(batch, iteration: int, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        images = normalise(images).to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = loop.network(images)
        return segmentation_loss(logits, labels) / accumulation, {}

    history = loop.run(
        lambda iteration: islice(micro_batches, accumulation),
        step,
        lambda done, totals, lr, seconds: {"loss": totals["loss"] / totals["steps"], "lr": lr, "seconds": seconds},
    )
    if rank == 0:
        save_trained(out_dir, net, history, run_id, inputs, normalise.name, network=json.dumps(network))
    return {"history": history, "fingerprint": run_id}
