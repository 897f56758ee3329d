"""One round of ICD training: CAM + bottom-up + sign flip + superpixel refinement + top-down.

Schedule as the official code: SGD (momentum 0.9, wd 5e-4 except biases/BN), lr 1e-3 with x10 on
the new classifiers, poly decay per epoch, 20 epochs, batch 32 with the last partial batch of an
epoch dropped (330 iterations on VOC's 10,582 images), random scale/flip/pad/crop; the top-down loss
warms up exponentially over 2 epochs. A checkpoint after every epoch holds the model
(sign-flip EMA included), optimiser and RNG state, and training resumes from it. Every random draw
is derived from (seed, epoch, sample), so a resumed run ends with the same weights as an
uninterrupted one on CPU.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from icd.losses import icd_losses, warmup_weight
from icd.model import ICDNet
from wsss.core.checkpoints import distributed, fingerprint, process_device, resume, save_checkpoint, save_trained
from wsss.core.digests import file_digest, files_digest, training_inputs
from wsss.core.errors import ConfigError
from wsss.core.shards import ShardStore
from wsss.data.classes import FOREGROUND_CLASSES, NUM_FOREGROUND
from wsss.data.io import read_rgb
from wsss.data.transforms import augment
from wsss.data.voc import VOCPaths
from wsss.nets.normalisation import weights_normalisation
from wsss.training import TrainingDiverged, multi_hot, poly_lr, rank_accuracy

log = logging.getLogger(__name__)


class ICDTrainingSet(Dataset):
    """Augmented (image, superpixels, labels) samples; augmentation seeded by (seed, epoch, index)."""

    def __init__(self, ids, labels, voc_root, superpixels: ShardStore, *, seed, scales, flip, crop_size, pad_rgb):
        self.ids, self.labels = list(ids), labels
        self.paths = VOCPaths.create(voc_root)
        self.superpixels = superpixels
        self.seed, self.epoch = seed, 0
        self.options = dict(scales=scales, flip=flip, crop_size=crop_size, pad_rgb=pad_rgb)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, superpixels = augment(
            rng, read_rgb(self.paths.image(image_id)), self.superpixels[image_id], **self.options
        )
        return (
            torch.from_numpy(image),
            torch.from_numpy(superpixels),
            torch.from_numpy(multi_hot(self.labels[image_id])),
        )


def build_network(model: dict, icd: dict) -> ICDNet:
    """The ICD network described by the `model` and `icd` config sections."""
    return ICDNet(
        num_classes=NUM_FOREGROUND,
        width=model["width"],
        batch_norm=model["backbone"] == "vgg16_bn",
        dropout=icd["dropout"],
        bottom_up_feature=icd["bottom_up_feature"],
        top_down=icd["top_down"],
        top_down_structure=icd["top_down_structure"],
        refine=icd["refine"],
        sign_momentum=icd["sign_momentum"],
        bn_momentum=icd["bn_momentum"],
    )


def epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[int]:
    """The image indices one epoch visits, in order: a permutation seeded by (seed, epoch) cut to full
    batches, as the official loader drops the last partial one. Global batch k is positions
    [k * batch_size, (k + 1) * batch_size); under DDP rank r takes every world-th position, so every
    rank gets the same number of samples."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return order[: count // batch_size * batch_size]


def train_icd(
    out_dir: str | os.PathLike,
    *,
    dataset: dict,
    superpixel_shards: list[str],
    weights: str,
    model: dict,
    icd: dict,
    seed: int,
    normalisation: str,
    progress: bool = True,
) -> dict:
    """Train ICD; write `checkpoint.pt` each epoch, then `model.pt` and `history.json`. Returns the history.

    `dataset` is the validated dataset report (ids, labels, roots); `model` and `icd` are the config
    sections of the same names; `normalisation` is the input the `weights` expect (checked against
    their file), which crops are padded with the zero of and which the checkpoints and model record.
    """
    out_dir = Path(out_dir)
    rank, world = distributed()
    device = process_device(rank)
    train_split = dataset["roles"]["train"]
    ids = dataset["splits"][train_split]
    labels = {image_id: dataset["labels"][image_id] for image_id in ids}
    per_rank_batch = max(1, icd["batch_size"] // world)
    batch_size = per_rank_batch * world
    iterations_per_epoch = len(ids) // batch_size  # the official loader drops the last partial batch
    if iterations_per_epoch == 0:
        raise ConfigError(
            f"icd.batch_size {batch_size} is larger than the {len(ids)} training images: no full "
            "batch. Lower icd.batch_size."
        )
    normalise = weights_normalisation(weights, normalisation, key="pretrain.normalisation")
    options = {"model": model, "icd": icd, "seed": seed, "weights": str(weights), "normalisation": normalise.name}
    run_id = fingerprint(options)

    torch.manual_seed(seed)
    net = build_network(model, icd)
    net.load_backbone(weights)
    net.to(device)
    groups = net.parameter_groups(icd["lr"], icd["weight_decay"], icd["new_layer_lr_mult"])
    optimizer = torch.optim.SGD(groups, lr=icd["lr"], momentum=icd["momentum"])
    train_net = net
    if world > 1:
        # Every parameter is in every step's graph (the warm-up multiplies the top-down loss, never skips it).
        train_net = torch.nn.parallel.DistributedDataParallel(net)

    data = ICDTrainingSet(
        ids,
        labels,
        dataset["voc_root"],
        ShardStore(superpixel_shards),
        seed=seed,
        scales=icd["scales"],
        flip=icd["flip"],
        crop_size=icd["crop_size"],
        pad_rgb=normalise.pad_rgb,
    )
    warmup_iterations = max(1, round(icd["warmup_epochs"] * iterations_per_epoch))

    checkpoint_path = out_dir / "checkpoint.pt"
    inputs = training_inputs(dataset, superpixels=files_digest(superpixel_shards), weights=file_digest(weights))
    history, start_epoch = resume(checkpoint_path, run_id, inputs, net, optimizer, device, "epoch")

    amp = bool(icd["amp"]) and device.type == "cuda"
    for epoch in range(start_epoch, icd["epochs"]):
        started = time.time()
        lr = poly_lr(icd["lr"], epoch, icd["epochs"], icd["poly_power"])
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
        data.epoch = epoch
        torch.manual_seed(seed * 1_000_003 + epoch)  # dropout masks: a function of (seed, epoch)
        order = epoch_order(len(ids), batch_size, seed, epoch)
        loader = DataLoader(
            data,
            batch_size=per_rank_batch,
            sampler=order[rank::world],
            num_workers=icd["workers"],
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )
        train_net.train()
        sums: dict[str, float] = {}
        correct = total = 0
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{icd['epochs']}", disable=not progress or rank != 0, mininterval=2.0
        )
        for step, (images, superpixels, targets) in enumerate(bar):
            images = normalise(images).to(device, non_blocking=True)
            superpixels, targets = superpixels.to(device), targets.to(device)
            iteration = (epoch - icd["top_down_start_epoch"]) * iterations_per_epoch + step
            top_down_weight = warmup_weight(iteration, warmup_iterations) if iteration >= 0 else 0.0
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                outputs = train_net(images, targets, superpixels)
            losses = icd_losses(
                outputs,
                targets,
                variant=icd["bottom_up_loss"],
                scale=icd["bottom_up_weight"],
                threshold=icd["top_down_threshold"],
                top_down_weight=top_down_weight,
            )
            if not torch.isfinite(losses["total"]):
                raise TrainingDiverged(
                    f"the ICD loss became {losses['total'].item()} at epoch {epoch + 1}, batch {step + 1} "
                    f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}). The last good checkpoint "
                    f"is kept at {checkpoint_path}. Lower icd.lr or check the input data."
                )
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            hits, count = rank_accuracy(outputs["class_logits"].detach(), targets)
            correct, total = correct + hits, total + count
            bar.set_postfix(loss=f"{losses['total'].item():.3f}", refresh=False)
        if world > 1:  # log the whole batch's figures, not rank 0's share
            totals = torch.tensor([*sums.values(), correct, total, len(loader)], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(totals)
            *values, correct, total, batches = totals.tolist()
            sums = dict(zip(sums, values, strict=True))
        else:
            batches = len(loader)
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "seconds": round(time.time() - started, 2),
            "top_down_weight": top_down_weight,
            "class_rank_accuracy": correct / max(total, 1),
            "sign": {name: int(s) for name, s in zip(FOREGROUND_CLASSES, net.sign_flip.sign().tolist(), strict=True)},
            **{f"loss_{key}": value / max(batches, 1) for key, value in sums.items()},
        }
        history.append(record)
        if rank == 0:
            log.info("epoch %s", json.dumps(record))
            save_checkpoint(checkpoint_path, net, optimizer, epoch, history, run_id, inputs, normalise.name)
    if rank == 0:
        save_trained(out_dir, net, history, run_id, inputs, normalise.name, options=json.dumps(options))
    return {"history": history, "fingerprint": run_id}
