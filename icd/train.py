"""One round of ICD training: CAM + bottom-up + sign flip + superpixel refinement + top-down.

Schedule as the official code: SGD (momentum 0.9, wd 5e-4 except biases/BN), lr 1e-3 with x10 on
the new classifiers, poly decay per epoch, 20 epochs, batch 32 with the last partial batch of an
epoch dropped (330 iterations on VOC's 10,582 images), random scale/flip/pad/crop; the top-down loss
warms up exponentially over 2 epochs. A checkpoint after every epoch holds the model
(sign-flip EMA included), optimiser and RNG state, and training resumes from it. Every random draw
is derived from (seed, epoch, sample), so a resumed run ends with the same weights as an
uninterrupted one on CPU. The loop itself (schedule, reseeding, checkpoints, DDP, history) is
`wsss.training.TrainingLoop`, counting epochs; this module gives it ICD's batches, step and record.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from icd.losses import icd_losses, warmup_weight
from icd.model import ICDNet
from icd.ood import (
    background_bottom_up_loss,
    background_top_down_loss,
    class_logits,
    climb,
    compute_prototypes,
    distance_loss,
    frozen_batch_norm,
    ood_classification_loss,
)
from wsss.core.checkpoints import distributed, fingerprint, process_device, save_trained
from wsss.core.digests import file_digest, files_digest, labelled_images_digests, training_inputs, value_digest
from wsss.core.errors import ConfigError, DataError
from wsss.core.files import save_torch
from wsss.core.shards import ShardStore
from wsss.data.classes import ClassList
from wsss.data.io import read_rgb
from wsss.data.ood import OoDImages
from wsss.data.training_images import TrainingImages
from wsss.data.transforms import augment, bilinear_resize, scaled_size
from wsss.nets.normalisation import weights_normalisation
from wsss.training import TrainingLoop, multi_hot, rank_accuracy

log = logging.getLogger(__name__)


# run_icd.py's training length: 20 epochs over train_aug; `icd.epochs: null` keeps its number of iterations when extra
# images (data.extra) join the training split.
OFFICIAL_EPOCHS = 20
OOD_STREAM = 0x6F6F64  # keeps the OoD images' draws apart from the training images' (seed, epoch, index) streams


@functools.lru_cache(maxsize=1)
def _ood_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The epoch's permutation of the OoD images, drawn once per epoch (per loader process), not per sample."""
    return np.random.default_rng([seed, epoch, OOD_STREAM]).permutation(count)


class ICDTrainingSet(Dataset):
    """Augmented (image, superpixels, labels, OoD image) samples; augmentation seeded by (seed, epoch, index).

    With `ood_images` (W-OoD networks, icd.ood) each sample also carries an augmented OoD image, the index's place
    in a permutation of them drawn per epoch, from `ood_epoch` on (before it an empty tensor, nothing read): a
    batch of ID images comes with a batch of as many OoD images (W-OoD's 1:1), all from the sample's own seeds.
    """

    def __init__(
        self,
        images: TrainingImages,
        num_foreground,
        superpixels: ShardStore,
        *,
        seed,
        scales,
        flip,
        crop_size,
        pad_rgb,
        ood_images: OoDImages | None = None,
        ood_epoch: int = 0,
    ):
        self.images, self.ids, self.num_foreground = images, list(images.ids), num_foreground
        self.superpixels = superpixels
        self.seed, self.epoch = seed, 0
        self.options = dict(scales=scales, flip=flip, crop_size=crop_size, pad_rgb=pad_rgb)
        self.ood_images, self.ood_epoch = ood_images, ood_epoch

    def __len__(self) -> int:
        return len(self.ids)

    def _ood_sample(self, index: int) -> torch.Tensor:
        if not self.ood_images or self.epoch < self.ood_epoch:
            return torch.empty(0, dtype=torch.uint8)
        order = _ood_order(self.seed, self.epoch, len(self.ood_images))
        rng = np.random.default_rng([self.seed, self.epoch, index, OOD_STREAM])
        image, _ = augment(rng, self.ood_images.read(int(order[index % len(order)])), None, **self.options)
        return torch.from_numpy(image)

    def __getitem__(self, index: int):
        image_id = self.ids[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, superpixels = augment(
            rng, read_rgb(self.images.path(image_id)), self.superpixels[image_id], **self.options
        )
        return (
            torch.from_numpy(image),
            torch.from_numpy(superpixels),
            torch.from_numpy(multi_hot(self.images.labels[image_id], self.num_foreground)),
            self._ood_sample(index),
        )


def build_network(model: dict, icd: dict, num_classes: int) -> ICDNet:
    """The ICD network described by the `model` and `icd` config sections, for `num_classes` image-level labels."""
    return ICDNet(
        num_classes=num_classes,
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


def training_epochs(epochs: int | None, split_images: int, training_images: int) -> int:
    """The epochs a network trains for: `icd.epochs` when set; null derives them from the data, the official 20 epochs'
    worth of iterations over the training split spread over all `training_images` (the split's and the extra ones),
    so that extra images change what the network sees, not how long it trains (the synthetic split with 200 extra
    images, 15 epochs, the 1500 iterations of 20 over the 600)."""
    if epochs is not None:
        return epochs
    return max(1, round(OFFICIAL_EPOCHS * split_images / training_images))


def epoch_order(count: int, batch_size: int, seed: int, epoch: int) -> list[int]:
    """The image indices one epoch visits, in order: a permutation seeded by (seed, epoch) cut to full
    batches, as the official loader drops the last partial one. Global batch k is positions
    [k * batch_size, (k + 1) * batch_size); under DDP rank r takes every world-th position, so every
    rank gets the same number of samples."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch)).tolist()
    return order[: count // batch_size * batch_size]


def _batch_position(epoch: int, batch: int, figures: dict[str, float]) -> str:
    """Where the ICD loss diverged, with each of that batch's losses (named as `icd_losses` names them): which
    term blew up says what to look at."""
    losses = (f"{key.removeprefix('loss_')}={value:.4g}" for key, value in figures.items() if key.startswith("loss_"))
    return f"epoch {epoch + 1}, batch {batch + 1} ({', '.join(losses)})"


def _ood_images(dataset: dict) -> OoDImages:
    """The dataset's OoD images (validate-data's `ood` entry), for a network trained with icd.ood."""
    images = OoDImages.of_dataset(dataset)
    if not images:
        raise ConfigError(
            "icd.ood is set (a W-OoD network of `networks`) but the dataset has no out-of-distribution images. "
            "Set data.ood_root (and data.ood_list), or remove the network."
        )
    return images


def extra_images_digest(images: TrainingImages) -> str:
    """What a network reads of the extra images (data.extra): their ids, labels and bytes. A resumed training
    whose extra images changed starts afresh, as one whose training split changed."""
    return value_digest(labelled_images_digests(images.extra_ids, images.labels, images.path))


def _whole_images(paths, scale: float, normalise, device):
    """Each image at `scale`, whole, as a 1 x 3 x H x W network input: how W-OoD's prototypes see the images."""
    for path in paths:
        image = read_rgb(path)
        height, width = scaled_size(image.shape, scale)
        yield normalise(bilinear_resize(image, height, width)[None]).to(device)


def _ood_prototypes(path: Path, run_id: str, compute) -> dict:
    """The W-OoD prototypes of this run: `compute()`d and saved at the start epoch (atomically, with the run's
    fingerprint), read back when a run resumes after it, since the network they were computed from is gone."""
    if compute is not None:
        prototypes = compute()
        save_torch({**prototypes, "fingerprint": run_id}, path)
        return prototypes
    saved = torch.load(path, weights_only=True) if path.is_file() else None
    if saved is None or saved["fingerprint"] != run_id:
        raise DataError(
            f"{path}: the W-OoD prototypes of the run being resumed are missing or another run's. Delete "
            f"{path.parent / 'checkpoint.pt'} to train this network again."
        )
    return saved


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
    images = TrainingImages.of_dataset(dataset, extra=icd["extra_images"])
    ids, labels = images.ids, images.labels
    classes = ClassList.of_dataset(dataset)
    per_rank_batch = max(1, icd["batch_size"] // world)
    batch_size = per_rank_batch * world
    iterations_per_epoch = len(ids) // batch_size  # the official loader drops the last partial batch
    if iterations_per_epoch == 0:
        raise ConfigError(
            f"icd.batch_size {batch_size} is larger than the {len(ids)} training images: no full "
            "batch. Lower icd.batch_size."
        )
    normalise = weights_normalisation(weights, normalisation, key="pretrain.normalisation")
    ood = icd.get("ood")
    ood_images = _ood_images(dataset) if ood else None
    if ood and world > 1:
        raise ConfigError("a W-OoD network (icd.ood) trains on one device: give its training one GPU or the CPU.")
    options = {"model": model, "icd": icd, "seed": seed, "weights": str(weights), "normalisation": normalise.name}
    run_id = fingerprint(options)

    torch.manual_seed(seed)
    net = build_network(model, icd, classes.num_foreground)
    net.load_backbone(weights)
    net.to(device)
    groups = net.parameter_groups(icd["lr"], icd["weight_decay"], icd["new_layer_lr_mult"])
    optimizer = torch.optim.SGD(groups, lr=icd["lr"], momentum=icd["momentum"])

    warmup_iterations = max(1, round(icd["warmup_epochs"] * iterations_per_epoch))

    def top_down_weight(epoch: int, batch: int) -> float:
        """The top-down loss weight at a batch: 0 before `top_down_start_epoch`, then the warm-up."""
        iteration = (epoch - icd["top_down_start_epoch"]) * iterations_per_epoch + batch
        return warmup_weight(iteration, warmup_iterations) if iteration >= 0 else 0.0

    inputs = training_inputs(
        dataset,
        superpixels=files_digest(superpixel_shards),
        weights=file_digest(weights),
        **({"extra_images": extra_images_digest(images)} if images.extra_ids else {}),
    )
    # The loop's plain DDP fits: every parameter is in every step's graph (the warm-up multiplies the top-down
    # loss, never skips it).
    loop = TrainingLoop(
        net,
        optimizer,
        unit="epoch",
        units=training_epochs(icd["epochs"], len(images.ids) - len(images.extra_ids), len(images.ids)),
        steps_per_unit=iterations_per_epoch,
        lr=icd["lr"],
        poly_power=icd["poly_power"],
        reseed=seed,
        log=log,
        name="ICD",
        advice="Lower icd.lr or check the input data.",
        position=_batch_position,
        desc="icd",
        progress=progress,
    )
    loop.resume(out_dir / "checkpoint.pt", run_id, inputs, normalise.name)

    prototypes: dict = {}
    if ood:
        excluded = torch.zeros(classes.num_foreground, dtype=torch.bool, device=device)
        excluded[[classes.index(name) - 1 for name in ood["excluded_classes"]]] = True
        climb_step = (ood["climb_step"] / torch.tensor(normalise.std)).view(1, 3, 1, 1).to(device)
        # This project's extensions (icd.ood.background_*_weight): OoD images as background for the ICD branches.
        background_losses = {
            name: (ood[f"background_{branch}_weight"], loss)
            for name, branch, loss in (
                ("ood_top_down", "top_down", background_top_down_loss),
                ("ood_bottom_up", "bottom_up", background_bottom_up_loss),
            )
            if ood[f"background_{branch}_weight"] > 0 and (branch != "top_down" or icd["top_down"])
        }
        # The OoD batch is read, climbed and forwarded only where a loss reads it, the prototypes computed only for the
        # distance loss: a network of one ingredient (an ablation) costs only that ingredient.
        climbs = ood["classification_weight"] > 0 or bool(background_losses)
        needs_prototypes = ood["distance_weight"] > 0
        ood_loss_names = ("ood", "distance", *background_losses)
        prototype_scale = sorted(icd["scales"])[len(icd["scales"]) // 2]  # the middle training scale

        def compute_now() -> dict:
            log.info("W-OoD: prototypes from the network after %d epochs", ood["start_epoch"])
            return compute_prototypes(
                net,
                _whole_images(map(images.path, ids), prototype_scale, normalise, device),
                torch.stack([torch.from_numpy(multi_hot(labels[i], classes.num_foreground)) for i in ids]),
                _whole_images(map(ood_images.path, range(len(ood_images))), prototype_scale, normalise, device),
                clusters=ood["clusters"],
                seed=seed,
            )

    data = ICDTrainingSet(
        images,
        classes.num_foreground,
        ShardStore(superpixel_shards),
        seed=seed,
        scales=icd["scales"],
        flip=icd["flip"],
        crop_size=icd["crop_size"],
        pad_rgb=normalise.pad_rgb,
        ood_images=ood_images if ood and climbs else None,  # read only where the OoD batch is forwarded
        ood_epoch=ood["start_epoch"] if ood else 0,
    )

    def epoch_batches(epoch: int) -> DataLoader:
        data.epoch = epoch
        if ood and needs_prototypes and epoch >= ood["start_epoch"] and not prototypes:
            compute = compute_now if epoch == ood["start_epoch"] else None
            found = _ood_prototypes(out_dir / "ood_prototypes.pt", run_id, compute)
            prototypes.update({key: found[key].to(device) for key in ("classes", "ood")})
        return DataLoader(
            data,
            batch_size=per_rank_batch,
            sampler=epoch_order(len(ids), batch_size, seed, epoch)[rank::world],
            num_workers=icd["workers"],
            pin_memory=device.type == "cuda",
            persistent_workers=False,
        )

    amp = bool(icd["amp"]) and device.type == "cuda"

    def ood_losses(outputs: dict, targets: torch.Tensor, ood_batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """W-OoD's two losses (icd.ood), weighted: the climbed OoD batch classified as no class, and the pooled
        features pulled to their classes' prototypes and pushed from the nearest OoD centres; with
        icd.ood.background_top_down_weight / background_bottom_up_weight, this project's background targets for the
        ICD branches on the same climbed batch (icd.ood.background_top_down_loss, background_bottom_up_loss). A loss
        whose weight is 0 is not computed (0)."""
        zero = outputs["class_logits"].new_zeros(())
        losses = {"ood": zero, "distance": zero}
        if climbs:
            climbed = climb(net, normalise(ood_batch).to(device, non_blocking=True), climb_step)
            with frozen_batch_norm(net):
                logits, features = class_logits(net, climbed)
                losses.update(
                    {
                        name: weight * loss(net, features, targets.shape[0])
                        for name, (weight, loss) in background_losses.items()
                    }
                )
            losses["ood"] = ood["classification_weight"] * ood_classification_loss(logits, excluded, targets.shape[0])
        if needs_prototypes:
            losses["distance"] = ood["distance_weight"] * distance_loss(
                outputs["pooled"], targets, prototypes["classes"], prototypes["ood"], ood["push_fraction"]
            )
        return losses

    def step(batch, epoch: int, index: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, superpixels, targets, ood_batch = batch
        images = normalise(images).to(device, non_blocking=True)
        superpixels, targets = superpixels.to(device), targets.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            outputs = loop.network(images, targets, superpixels)
        losses = icd_losses(
            outputs,
            targets,
            variant=icd["bottom_up_loss"],
            scale=icd["bottom_up_weight"],
            threshold=icd["top_down_threshold"],
            top_down_weight=top_down_weight(epoch, index),
        )
        if ood:  # every step logs the OoD losses, zero before they start
            started = epoch >= ood["start_epoch"]
            zero = losses["total"].new_zeros(())
            extra = ood_losses(outputs, targets, ood_batch) if started else dict.fromkeys(ood_loss_names, zero)
            losses = {**losses, **extra, "total": losses["total"] + sum(extra.values())}
        correct, count = rank_accuracy(outputs["class_logits"].detach(), targets)
        return losses["total"], {
            **{f"loss_{key}": float(value.detach()) for key, value in losses.items()},
            "correct": correct,
            "labels": count,
        }

    def record(epochs_done: int, totals: dict[str, float], lr: float, seconds: float) -> dict:
        signs = net.sign_flip.sign().tolist()
        return {
            "lr": lr,
            "seconds": seconds,
            "top_down_weight": top_down_weight(epochs_done - 1, iterations_per_epoch - 1),  # the epoch's last
            "class_rank_accuracy": totals["correct"] / max(totals["labels"], 1),
            "sign": {name: int(sign) for name, sign in zip(classes.foreground, signs, strict=True)},
            **{key: value / totals["steps"] for key, value in totals.items() if key.startswith("loss_")},
        }

    history = loop.run(epoch_batches, step, record)
    if rank == 0:
        save_trained(out_dir, net, history, run_id, inputs, normalise.name, options=json.dumps(options))
    return {"history": history, "fingerprint": run_id}
