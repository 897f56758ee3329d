"""GPU benchmark at the paper's sizes: ICD and DeepLab checked against float64, timed, and their schedules priced.

One prepared command for a short loan of a GPU (issue 17): the CUDA, AMP and DDP code paths had never
run on one. The networks are the project's own (`icd.train.build_network`, `deeplab.model.build_model`)
as the real-VOC configuration describes them (the schema's defaults are the paper's settings: VGG16 at
width 1.0, ICD batch 32 on 321 crops, DeepLab VGG16 and ResNet101 batch 10 on 321 crops, the 513
inference canvas), with random weights on random images. Most valuable first, inside `--budget-s`:

1. matmul peak in fp32, TF32 and bf16: the yardstick for the networks' TFLOP/s;
2. correctness: one forward and backward on the device against float64 on the CPU (2 images at 161:
   the real channel widths, so the real reduction lengths, at a quarter of the reference's cost):
   ICD's maps, sign flip, SPRefine, top-down target, losses and gradients; DeepLab's logits, loss and
   gradients; errors against what each precision allows (see `Precision`);
3. training steps (forward, losses, backward, SGD step, as `icd.train` and `deeplab.train` run them):
   fp32 and bf16 autocast, then TF32, then channels_last, then torch.compile; the median of many
   synchronised steps after warm-up, images/s, TFLOP/s (FlopCounterMode) against the matmul peak, peak
   device memory;
4. score inference (`icd.scores.image_scores` at the 513 canvas) and the seed CRF (`wsss.crf.refine.refine_seed`
   on a 500 x 375 image with sparse seeds), per image and over the machine's cores;
5. a two-process DistributedDataParallel step of ICD when there are >= 2 GPUs;
6. the paper's schedules priced with the fastest measured setting whose precision passed its check.

Every row is printed (and flushed) as soon as it is measured, so a run cut short still reports. An item
whose cost, estimated from the timings before it, does not fit in what is left is skipped (later,
cheaper ones still run); one that overruns is cut off at the budget; a failure (compile, out of memory)
is reported and the run goes on. `--tiny` runs it all at toy sizes on the CPU: the code paths run, the
numbers mean nothing.

    python benchmarks/gpu.py [--budget-s 420] [--device cuda|cpu] [--tiny]
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # the budget counts from here: importing torch is part of the run

import argparse
import copy
import gc
import math
import multiprocessing
import os
import signal
import socket
import statistics
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import yaml
from torch import distributed as dist
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deeplab.model import build_model, parameter_groups
from deeplab.train import segmentation_loss
from icd.losses import icd_losses, normalise_target
from icd.scores import image_scores
from icd.train import build_network
from wsss.core.config import SCHEMA_PATH, deep_merge, derive_from_the_data, load_config
from wsss.crf.refine import refine_seed
from wsss.data.canvas import canvas_size
from wsss.data.classes import IGNORE_LABEL, NUM_CLASSES, NUM_FOREGROUND
from wsss.nets.normalisation import named
from wsss.nets.resnet import Bottleneck

VOC_TRAIN_AUG_IMAGES = 10_582
VOC_IMAGE_SIZE = (375, 500)  # height, width
SEED_DENSITY = 0.03  # share of the CRF image's pixels that carry a seed label
CHECK_SEED, CALIBRATION_SEED = 1, 2
# The input torchvision's ImageNet files expect (vgg16-397923af.pth, resnet101-63fe2227.pth: what a real run
# loads for both backbones); with random weights it only sets the inputs' scale.
NORMALISATION = named("torchvision")
# Cold torch.compile (dynamo + inductor) of a training step, per leaf module, until one compile is
# measured: ~5 s measured on 2 busy CPU cores for the tiny ICD (43 leaf modules, 222 s); on a GPU node
# a guess of 1 s (its many cores compile in parallel).
COMPILE_PRIOR_S_PER_MODULE = {"cpu": 5.0, "cuda": 1.0}
DDP_START_PRIOR_S = 30.0  # spawning two processes, importing torch, NCCL set-up
CHECK_SHARE_OF_BUDGET = 0.2  # one network's correctness check is cut off beyond this
RESIDUAL_SCALE = 0.1  # see quiet_residual_branches
GIB = 2**30


# ---------------------------------------------------------------------------------------------
# Precisions

ELEMENTWISE, DECIDED, INTEGRATED, ROUTED = "elementwise", "decided", "integrated", "routed"


@dataclass(frozen=True)
class Precision:
    """How float32 work runs, and how far from float64 its results may land.

    `tf32` sets cuDNN convolutions and cuBLAS matmuls: True TF32, False IEEE fp32, None PyTorch's
    defaults (TF32 convolutions, IEEE matmuls: what `icd.amp: false` gets on a GPU). `autocast` runs
    the forward under bf16 autocast, as `icd.amp` and `deeplab.amp` do; the losses stay outside it.

    A quantity's error is max |x - x64| / max |x64|: scaled by the tensor's largest entry, because
    ReLU maps hold many near-zero entries whose own relative error means nothing. By kind:
    - ELEMENTWISE (maps, losses, the gradients of the layers next to a continuous loss): error <=
      `tolerance`. fp32: unit roundoff u = 6e-8, a K-term dot product errs by ~sqrt(K) u (~4e-6 at
      a 3x3x512 convolution's K = 4608), compounding over ~20 layers, and cuDNN's Winograd and FFT
      kernels add up to ~10x: 5e-4 (measured on the CPU at full width: <= 1.2e-5). TF32 rounds the
      operands to 10 mantissa bits (u = 4.9e-4) and keeps fp32 activations: 2e-2. bf16 (u = 3.9e-3)
      rounds operands and every stored activation: 0.1 (measured on the CPU: <= 5e-2).
    - DECIDED (maps behind a discrete decision: the sign flip's comparison, SPRefine's votes and
      winners, the top-down threshold |n| > 0.2): a decision flips where the reference lies within
      that error of a tie; the share of entries off by more than `tolerance` <= `decision_share`.
    - INTEGRATED (forward sums over decided entries: the sign-flip EMA, the top-down loss): error
      <= `tolerance` + `decision_share`.
    - ROUTED (gradients that reach a weight through max-pool routing, ReLU gates or the top-down
      mask): a tie broken the other way sends a gradient elsewhere, and weight gradients at random
      initialisation are sums of terms that nearly cancel, so one step's deep gradient moves far more
      than the forward: judged as the SGD step it makes, ||g - g64|| / ||g64|| <= `routed_tolerance`.
      Measured on the CPU at full width (first and middle convolutions): fp32 <= 3.4e-3, bf16
      0.13-0.45 (bf16 rounding makes max-pool ties common). Allowed: fp32 2e-2, TF32 0.2, bf16 0.6:
      these catch a wrong, zero or NaN gradient (an error >= 1), not bf16's own imprecision.
    """

    name: str
    tf32: bool | None
    autocast: bool
    tolerance: float
    decision_share: float
    routed_tolerance: float

    def allows(self, kind: str, error: Discrepancy) -> bool:
        """Whether a quantity of this `kind` with this discrepancy from float64 is within tolerance."""
        if kind == ELEMENTWISE:
            return error.max_scaled <= self.tolerance
        if kind == DECIDED:
            return error.share_off <= self.decision_share
        if kind == INTEGRATED:
            return error.max_scaled <= self.tolerance + self.decision_share
        return error.norm_relative <= self.routed_tolerance


PRECISIONS = {
    "fp32": Precision("fp32", tf32=False, autocast=False, tolerance=5e-4, decision_share=1e-3, routed_tolerance=2e-2),
    "tf32": Precision("tf32", tf32=True, autocast=False, tolerance=2e-2, decision_share=1e-2, routed_tolerance=0.2),
    "bf16": Precision("bf16", tf32=None, autocast=True, tolerance=0.1, decision_share=3e-2, routed_tolerance=0.6),
}
FLOAT64_REFERENCE = Precision(
    "fp64", tf32=None, autocast=False, tolerance=0.0, decision_share=0.0, routed_tolerance=0.0
)


def device_precisions(device: torch.device) -> list[Precision]:
    """fp32, TF32 and bf16 on a GPU; TF32 is a GPU format, so the CPU runs fp32 and bf16."""
    names = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    return [PRECISIONS[name] for name in names]


@contextmanager
def float32_mode(precision: Precision) -> Iterator[None]:
    """cuDNN and cuBLAS float32 arithmetic as `precision` says, restored afterwards (the fp32_precision
    flags of PyTorch >= 2.9; mixing them with the older allow_tf32 flags is an error)."""
    flags = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [flag.fp32_precision for flag in flags]
    if precision.tf32 is not None:
        for flag in flags:
            flag.fp32_precision = "tf32" if precision.tf32 else "ieee"
    try:
        yield
    finally:
        for flag, value in zip(flags, saved, strict=True):
            flag.fp32_precision = value


def autocast(precision: Precision, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision.autocast)


# ---------------------------------------------------------------------------------------------
# Sizes and inputs


@dataclass(frozen=True)
class Sizes:
    """What runs: the paper's sizes, or toy ones for `--tiny`."""

    icd_width: float
    deeplab_width: float
    icd_batch: int
    icd_crop: int
    deeplab_batch: int
    deeplab_crop: int
    check_batch: int
    check_crop: int
    canvas: int  # score-inference canvas side
    image: tuple[int, int]  # (height, width) of the inference and CRF image
    superpixels: int  # regions per image
    warmup_steps: int
    timed_steps: int
    matmul_side: int
    inference_images: int
    crf_repeats: int
    crf_images_per_process: int


REAL_VOC = {"data": {"source": "voc", "voc_root": "unused"}, "pretrain": {"weights": "unused"}}  # paths never read


def paper_config() -> dict:
    """The validated real-VOC configuration: no synthetic presets, the schema's defaults, which are the
    paper's settings. Validation needs snakemake and jsonschema, which a GPU machine's image may lack
    (the lent H200's has neither, and installs nothing): there the schema's defaults are read directly."""
    try:
        return load_config(overrides=REAL_VOC)
    except ModuleNotFoundError as missing:
        note(f"({missing.name} is not installed: the configuration is the schema's defaults, unvalidated)")
        return unvalidated_paper_config()


def schema_defaults(schema: dict) -> dict:
    """The defaults of an object schema's properties, nested objects filled in as validation fills them (an object
    whose default is null stays null)."""
    return {
        key: schema_defaults(spec)
        if "properties" in spec and spec.get("default", {}) is not None
        else copy.deepcopy(spec["default"])
        for key, spec in schema.get("properties", {}).items()
        if "properties" in spec or "default" in spec
    }


def unvalidated_paper_config() -> dict:
    config = deep_merge(schema_defaults(yaml.safe_load(SCHEMA_PATH.read_text())), REAL_VOC)
    derive_from_the_data(config)  # what validation fills in where the schema's default is null
    return config


def paper_sizes(config: dict) -> Sizes:
    icd, deeplab = config["icd"], config["deeplab"]
    return Sizes(
        icd_width=config["model"]["width"],
        deeplab_width=deeplab["width"],
        icd_batch=icd["batch_size"],
        icd_crop=icd["crop_size"],
        deeplab_batch=deeplab["batch_size"],
        deeplab_crop=deeplab["crop_size"],
        check_batch=2,
        check_crop=161,
        canvas=canvas_size(config["seeds"]["inference_size"], {"largest_side": max(VOC_IMAGE_SIZE)}),
        image=VOC_IMAGE_SIZE,
        superpixels=config["superpixels"]["max_regions"],
        warmup_steps=3,
        timed_steps=12,
        matmul_side=8192,
        inference_images=20,
        crf_repeats=5,
        crf_images_per_process=2,
    )


def tiny_sizes(config: dict) -> Sizes:
    return replace(
        paper_sizes(config),
        icd_width=1 / 16,
        deeplab_width=1 / 16,
        icd_batch=2,
        icd_crop=65,
        deeplab_batch=2,
        deeplab_crop=65,
        check_crop=65,
        canvas=97,
        image=(60, 80),
        superpixels=16,
        warmup_steps=1,
        timed_steps=3,
        matmul_side=256,
        inference_images=3,
        crf_repeats=2,
        crf_images_per_process=1,
    )


def random_images(rng: np.random.Generator, batch: int, side: int) -> np.ndarray:
    return rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)


def block_superpixels(rng: np.random.Generator, height: int, width: int, count: int) -> np.ndarray:
    """H x W ids 0..n-1 of a grid of n ~ `count` blocks in random order: SPRefine's cost depends on the
    region count and the map size only."""
    side = max(1, round(math.sqrt(count)))
    rows, cols = np.arange(height) * side // height, np.arange(width) * side // width
    return rng.permutation(side * side)[rows[:, None] * side + cols[None, :]]


def random_class_labels(rng: np.random.Generator, batch: int) -> torch.Tensor:
    """B x 20 multi-hot: even images hold one class, odd ones two (the bottom-up loss counts single-class images)."""
    labels = torch.zeros(batch, NUM_FOREGROUND)
    for index in range(batch):
        labels[index, rng.choice(NUM_FOREGROUND, size=1 + index % 2, replace=False)] = 1.0
    return labels


def random_seed_labels(rng: np.random.Generator, batch: int, side: int) -> torch.Tensor:
    """B x side x side labels in blocks of the 21 classes, a quarter of the blocks 255 (ignored), as seeds."""
    coarse = rng.integers(0, NUM_CLASSES, (batch, 6, 6))
    coarse[rng.random(coarse.shape) < 0.25] = IGNORE_LABEL
    index = np.arange(side) * 6 // side
    return torch.from_numpy(coarse[:, index][:, :, index])


def seed_crf_case(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H x W x 3 image, H x W seed): two coloured ellipses on a noisy background; SEED_DENSITY of the
    pixels carry their true label (0, 8 or 15), the rest 255."""
    ys, xs = np.mgrid[0:height, 0:width]
    ys, xs = ys / height, xs / width
    truth = np.zeros((height, width), np.uint8)
    truth[((ys - 0.45) / 0.25) ** 2 + ((xs - 0.3) / 0.18) ** 2 < 1] = 8
    truth[((ys - 0.55) / 0.3) ** 2 + ((xs - 0.7) / 0.2) ** 2 < 1] = 15
    colours = np.zeros((NUM_CLASSES, 3))
    colours[[0, 8, 15]] = [(90, 120, 80), (200, 150, 60), (60, 70, 190)]
    image = np.clip(colours[truth] + rng.normal(0, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    seed = np.where(rng.random((height, width)) < SEED_DENSITY, truth, IGNORE_LABEL).astype(np.uint8)
    return image, seed


def to_device(
    inputs: dict[str, torch.Tensor],
    device: torch.device,
    *,
    float_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> dict[str, torch.Tensor]:
    """Inputs on `device`; floating ones cast to `float_dtype` and images laid out channels_last if asked."""
    moved = {}
    for name, tensor in inputs.items():
        tensor = tensor.to(device)
        if tensor.is_floating_point():
            tensor = tensor.to(float_dtype or tensor.dtype)
            if channels_last and tensor.ndim == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
        moved[name] = tensor
    return moved


# ---------------------------------------------------------------------------------------------
# Workloads: a network as its trainer runs it


def without_dropout(net: nn.Module) -> nn.Module:
    """Training mode (batch statistics, the sign-flip update) with dropout off: two runs of the same
    weights are then comparable."""
    net.train()
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.eval()
    return net


def calibrate_batch_norm(net: nn.Module, images: torch.Tensor) -> None:
    """Running statistics from one batch, as pretrained weights carry: frozen BatchNorm at its initial
    (0, 1) statistics lets a random ResNet101's activations grow block after block (logits ~1e4),
    which saturates the loss and makes every comparison of gradients meaningless."""
    norms = [module for module in net.modules() if isinstance(module, nn.BatchNorm2d)]
    if not norms:
        return
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # a cumulative average: after one batch, that batch's statistics
    net.train()
    with torch.no_grad():
        net(images)
    for module in norms:
        module.momentum = 0.1


def quiet_residual_branches(net: nn.Module) -> None:
    """Each bottleneck's last BatchNorm scale set to RESIDUAL_SCALE, small as Fixup and SkipInit start it.

    At scale 1 a random ResNet101 is chaotic, each of its 33 blocks amplifying a perturbation: fp32
    rounding reached its logits at 3e-4 and bf16's at 70 % (measured on the CPU at full width), so a
    check would measure the random network, not the arithmetic. At 0.1: 2e-6 and 3e-2, and every
    block's weights still get gradients.
    """
    for module in net.modules():
        if isinstance(module, Bottleneck):
            nn.init.constant_(module.bn3.weight, RESIDUAL_SCALE)


class Workload:
    """A network with its inputs, forward and losses, and optimiser, as its trainer runs them."""

    name: str
    batch_size: int
    crop: int

    def build(self, device: torch.device) -> nn.Module:
        raise NotImplementedError

    def inputs(self, batch_size: int, crop: int, seed: int) -> dict[str, torch.Tensor]:
        """A random batch on the CPU in float32."""
        raise NotImplementedError

    def forward(self, net: nn.Module, inputs: dict, precision: Precision) -> tuple[dict, dict]:
        """(outputs, losses with "total"): the forward under autocast as asked, the losses outside it."""
        raise NotImplementedError

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        raise NotImplementedError

    def check_quantities(self, net: nn.Module, outputs: dict, losses: dict) -> dict[str, tuple[torch.Tensor, str]]:
        """{name: (tensor, kind)} compared against float64 after one forward and backward."""
        raise NotImplementedError


class ICDWorkload(Workload):
    name = "ICD"

    def __init__(self, config: dict, sizes: Sizes) -> None:
        self.config, self.sizes = config, sizes
        self.batch_size, self.crop = sizes.icd_batch, sizes.icd_crop

    def build(self, device: torch.device) -> nn.Module:
        return build_network(
            {**self.config["model"], "width": self.sizes.icd_width}, self.config["icd"], NUM_FOREGROUND
        ).to(device)

    def inputs(self, batch_size: int, crop: int, seed: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(seed)
        regions = [block_superpixels(rng, crop, crop, self.sizes.superpixels) for _ in range(batch_size)]
        return {
            "images": NORMALISATION(random_images(rng, batch_size, crop)),
            "labels": random_class_labels(rng, batch_size),
            "superpixels": torch.from_numpy(np.stack(regions)),
        }

    def forward(self, net: nn.Module, inputs: dict, precision: Precision) -> tuple[dict, dict]:
        icd = self.config["icd"]
        with autocast(precision, inputs["images"].device):
            outputs = net(inputs["images"], inputs["labels"], inputs["superpixels"])
        # top_down_weight 1: the warm-up is over after 2 of the 20 epochs
        losses = icd_losses(
            outputs,
            inputs["labels"],
            variant=icd["bottom_up_loss"],
            scale=icd["bottom_up_weight"],
            threshold=icd["top_down_threshold"],
            top_down_weight=1.0,
        )
        return outputs, losses

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        icd = self.config["icd"]
        groups = net.parameter_groups(icd["lr"], icd["weight_decay"], icd["new_layer_lr_mult"])
        return torch.optim.SGD(groups, lr=icd["lr"], momentum=icd["momentum"])

    def check_quantities(self, net: nn.Module, outputs: dict, losses: dict) -> dict[str, tuple[torch.Tensor, str]]:
        """The directions and fc8 learn from continuous losses only (the bottom-up loss sees detached
        features, fc8 only the CAM loss); the top-down classifier learns through the thresholded target,
        conv1_1 through every max pool and ReLU."""
        target = outputs["refined"] if outputs["refined"] is not None else outputs["bottom_up"]
        return {
            "class logits": (outputs["class_logits"], ELEMENTWISE),
            "CAM": (outputs["cam"], ELEMENTWISE),
            "bottom-up scores Ŝ": (outputs["bottom_up_raw"], ELEMENTWISE),
            "sign-flip EMA": (net.sign_flip.stored, INTEGRATED),
            "sign-flipped S": (outputs["bottom_up"], DECIDED),
            "refined S' (SPRefine)": (target, DECIDED),
            "top-down target n": (normalise_target(target), DECIDED),
            "adapted S''": (outputs["adapted"], ELEMENTWISE),
            "loss CAM": (losses["cam"], ELEMENTWISE),
            "loss bottom-up": (losses["bottom_up"], ELEMENTWISE),
            "loss top-down": (losses["top_down"], INTEGRATED),
            "grad directions": (net.directions.grad, ELEMENTWISE),
            "grad fc8": (net.fc8.weight.grad, ELEMENTWISE),
            "grad top-down classifier": (net.top_down_classifier.weight.grad, ROUTED),
            "grad conv1_1": (net.backbone.features[0].weight.grad, ROUTED),
        }


class DeepLabWorkload(Workload):
    def __init__(self, backbone: str, config: dict, sizes: Sizes) -> None:
        self.backbone, self.config, self.sizes = backbone, config, sizes
        self.name = {"vgg16": "DeepLab VGG16", "resnet101": "DeepLab ResNet101"}[backbone]
        self.batch_size, self.crop = sizes.deeplab_batch, sizes.deeplab_crop

    def build(self, device: torch.device) -> nn.Module:
        """As `deeplab.train` builds it (VGG16 with BatchNorm only for a vgg16_bn ICD backbone), residual
        branches quietened, BatchNorm calibrated on a random batch, then frozen as `deeplab.freeze_bn` says."""
        deeplab = self.config["deeplab"]
        net = build_model(
            num_classes=NUM_CLASSES,
            backbone=self.backbone,
            head=deeplab["head"],
            width=self.sizes.deeplab_width,
            batch_norm=self.backbone == "vgg16" and self.config["model"]["backbone"] == "vgg16_bn",
        )
        net.to(device)
        quiet_residual_branches(net)
        calibrate_batch_norm(net, self.inputs(2, self.sizes.check_crop, CALIBRATION_SEED)["images"].to(device))
        if deeplab["freeze_bn"]:
            net.freeze_batch_norm()
        return net

    def inputs(self, batch_size: int, crop: int, seed: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng(seed)
        return {
            "images": NORMALISATION(random_images(rng, batch_size, crop)),
            "labels": random_seed_labels(rng, batch_size, crop),
        }

    def forward(self, net: nn.Module, inputs: dict, precision: Precision) -> tuple[dict, dict]:
        with autocast(precision, inputs["images"].device):
            logits = net(inputs["images"])
        return {"logits": logits}, {"total": segmentation_loss(logits, inputs["labels"])}

    def optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        deeplab = self.config["deeplab"]
        groups = parameter_groups(
            net,
            weight_decay=deeplab["weight_decay"],
            head_lr_mult=deeplab["head_lr_mult"],
            head_bias_lr_mult=deeplab["head_bias_lr_mult"],
        )
        return torch.optim.SGD(groups, lr=deeplab["lr"][self.backbone], momentum=deeplab["momentum"])

    def check_quantities(self, net: nn.Module, outputs: dict, losses: dict) -> dict[str, tuple[torch.Tensor, str]]:
        convolutions = [module for module in net.backbone.modules() if isinstance(module, nn.Conv2d)]
        head = next(parameter for parameter in net.head.parameters() if parameter.ndim > 1)
        return {
            "logits": (outputs["logits"], ELEMENTWISE),
            "loss": (losses["total"], ELEMENTWISE),
            "grad head": (head.grad, ELEMENTWISE),
            "grad middle conv": (convolutions[len(convolutions) // 2].weight.grad, ROUTED),
            "grad first conv": (convolutions[0].weight.grad, ROUTED),
        }


def training_step(
    workload: Workload, net: nn.Module, optimizer: torch.optim.Optimizer, inputs: dict, precision: Precision
) -> None:
    _, losses = workload.forward(net, inputs, precision)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()


# ---------------------------------------------------------------------------------------------
# Output


class Table:
    """A markdown table printed row by row and flushed, so a run cut off still shows every finished row.
    The header is printed again when another table or a note came in between."""

    _last: Table | None = None  # the table that printed the previous line

    def __init__(self, title: str, columns: list[tuple[str, int]]) -> None:
        self.title, self.columns = title, columns

    def _line(self, cells) -> str:
        return (
            "| " + " | ".join(f"{cell!s:>{width}}" for cell, (_, width) in zip(cells, self.columns, strict=True)) + " |"
        )

    def row(self, *cells) -> None:
        if Table._last is not self:
            print(f"\n## {self.title}")
            print(self._line(name for name, _ in self.columns))
            print("|" + "|".join("-" * (max(width, len(name)) + 2) for name, width in self.columns) + "|")
        print(self._line(list(cells) + [""] * (len(self.columns) - len(cells))), flush=True)
        Table._last = self


def note(text: str) -> None:
    print(text, flush=True)
    Table._last = None


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


MATMUL_TABLE = Table("Matmul peak", [("precision", 9), ("side", 5), ("ms", 8), ("TFLOP/s", 8)])
CHECK_TABLE = Table(
    "Correctness: device vs float64 on the CPU (max error / max |reference|; decided: share "
    "off; routed: ||error|| / ||reference||)",
    [("network", 17), ("quantity", 24), ("kind", 11), ("fp32", 20), ("tf32", 20), ("bf16", 20)],
)
TRAINING_TABLE = Table(
    "Training steps",
    [
        ("network", 17),
        ("precision", 9),
        ("layout", 13),
        ("compiled", 8),
        ("batch", 5),
        ("first step s", 12),
        ("step ms", 9),
        ("images/s", 9),
        ("TFLOP/s", 8),
        ("of peak", 7),
        ("peak GiB", 8),
    ],
)
INFERENCE_TABLE = Table(
    "Score inference and seed CRF", [("step", 36), ("setting", 34), ("ms per image", 12), ("images/s", 9)]
)
DDP_TABLE = Table(
    "DDP",
    [
        ("network", 8),
        ("processes", 12),
        ("precision", 9),
        ("global batch", 12),
        ("step ms", 9),
        ("images/s", 9),
        ("vs 1 process", 12),
        ("weight drift", 12),
    ],
)
SCHEDULE_TABLE = Table(
    "Paper schedules on this device (estimates from the best measured setting; data loading assumed to keep up)",
    [("stage", 18), ("schedule", 30), ("setting", 36), ("one run", 8), ("runs", 4), ("total", 8)],
)


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass
class TrainingResult:
    workload: str
    precision: str
    channels_last: bool
    compiled: bool
    batch: int
    first_step_s: float
    step_s: float
    peak_bytes: int | None

    @property
    def images_per_s(self) -> float:
        return self.batch / self.step_s

    def setting(self) -> str:
        return ", ".join([self.precision] + ["channels_last"] * self.channels_last + ["compiled"] * self.compiled)


@dataclass
class Measurements:
    """What the run has measured so far: the tables' numbers, and what later estimates are made from."""

    matmul_tflops: dict[str, float] = field(default_factory=dict)  # precision -> TFLOP/s
    checks_passed: dict[tuple[str, str], bool] = field(default_factory=dict)  # (network, precision)
    training: list[TrainingResult] = field(default_factory=list)
    flops_per_step: dict[str, int] = field(default_factory=dict)  # network -> FLOPs of one training step
    setup_s: dict[str, float] = field(default_factory=dict)  # network -> build, move, optimiser
    leaf_modules: dict[str, int] = field(default_factory=dict)
    compile_s_per_module: list[float] = field(default_factory=list)
    inference_s_per_image: float | None = None
    crf_images_per_s: float | None = None
    crf_processes: int = 0

    def eager(self, workload: str) -> list[TrainingResult]:
        return [result for result in self.training if result.workload == workload and not result.compiled]

    def best_training(self, workload: str, *, eager_only: bool = False) -> TrainingResult | None:
        """The fastest setting measured, among those whose precision passed this network's check if any did."""
        results = self.eager(workload) if eager_only else [r for r in self.training if r.workload == workload]
        checked = [result for result in results if self.checks_passed.get((workload, result.precision))]
        return min(checked or results, key=lambda result: result.step_s, default=None)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(call: Callable[[], object], *, warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Seconds of each of `repeats` calls after `warmup` untimed ones, the device synchronised around each."""
    for _ in range(warmup):
        call()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_matmul_peaks(precisions: list[Precision], side: int, device: torch.device, m: Measurements) -> None:
    """TFLOP/s of a large square matmul per precision (bf16 inputs for bf16): what the networks are held to."""
    for precision in precisions:
        dtype = torch.bfloat16 if precision.autocast else torch.float32
        a, b = (torch.randn(side, side, device=device, dtype=dtype) for _ in range(2))
        with float32_mode(precision):
            seconds = statistics.median(time_calls(lambda a=a, b=b: a @ b, warmup=3, repeats=10, device=device))
        m.matmul_tflops[precision.name] = 2 * side**3 / seconds / 1e12
        MATMUL_TABLE.row(precision.name, side, f"{seconds * 1e3:.2f}", f"{m.matmul_tflops[precision.name]:.1f}")


def one_step_quantities(workload: Workload, net: nn.Module, inputs: dict, precision: Precision) -> dict:
    """{name: (float64 CPU tensor, kind)} after one forward and backward of `net` in `precision`."""
    without_dropout(net)
    with float32_mode(precision):
        outputs, losses = workload.forward(net, inputs, precision)
        losses["total"].backward()
    quantities = workload.check_quantities(net, outputs, losses)
    return {name: (tensor.detach().to("cpu", torch.float64), kind) for name, (tensor, kind) in quantities.items()}


@dataclass(frozen=True)
class Discrepancy:
    """How far a result lies from its float64 reference (see `Precision`)."""

    max_scaled: float  # max |x - x64| / max |x64|
    share_off: float  # share of entries off by more than the precision's tolerance on that scale
    norm_relative: float  # ||x - x64|| / ||x64||


def compare(result: torch.Tensor, reference: torch.Tensor, tolerance: float) -> Discrepancy:
    """The discrepancy of `result` from `reference`; a non-finite result is off everywhere."""
    tiny = torch.finfo(torch.float64).tiny
    difference = torch.nan_to_num(result - reference, nan=math.inf)
    scaled = difference.abs() / reference.abs().max().clamp(min=tiny)
    return Discrepancy(
        float(scaled.max()),
        float((scaled > tolerance).double().mean()),
        float(difference.norm() / reference.norm().clamp(min=tiny)),
    )


def discrepancy_cell(kind: str, error: Discrepancy, within: bool) -> str:
    """The figure a kind is judged by, e.g. "3.1e-06", "2.4e-02 (0.13%)", "l2 3.5e-01", with OVER when outside."""
    if kind == ROUTED:
        figure = f"l2 {error.norm_relative:.1e}"
    else:
        figure = f"{error.max_scaled:.1e}" + (f" ({error.share_off:.2%})" if kind == DECIDED else "")
    return figure + ("" if within else " OVER")


def check_workload(
    workload: Workload, precisions: list[Precision], device: torch.device, sizes: Sizes, m: Measurements
) -> None:
    """One forward and backward on the device per precision against float64 on the CPU, same weights and batch."""
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    pristine = workload.build(cpu)
    inputs = workload.inputs(sizes.check_batch, sizes.check_crop, CHECK_SEED)
    reference = one_step_quantities(
        workload, copy.deepcopy(pristine).double(), to_device(inputs, cpu, float_dtype=torch.float64), FLOAT64_REFERENCE
    )
    results = {
        precision.name: one_step_quantities(
            workload, copy.deepcopy(pristine).to(device), to_device(inputs, device), precision
        )
        for precision in precisions
    }
    passed = dict.fromkeys(results, True)
    for name, (expected, kind) in reference.items():
        cells = []
        for precision_name in ("fp32", "tf32", "bf16"):
            if precision_name not in results:
                cells.append("n/a")
                continue
            precision = PRECISIONS[precision_name]
            error = compare(results[precision_name][name][0], expected, precision.tolerance)
            within = precision.allows(kind, error)
            passed[precision_name] &= within
            cells.append(discrepancy_cell(kind, error, within))
        CHECK_TABLE.row(workload.name, name, kind, *cells)
    for precision_name, ok in passed.items():
        m.checks_passed[(workload.name, precision_name)] = ok


def count_flops(step: Callable[[], None]) -> int:
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def measure_training(
    workload: Workload,
    precision: Precision,
    *,
    channels_last: bool,
    compiled: bool,
    device: torch.device,
    sizes: Sizes,
    m: Measurements,
) -> None:
    """Median training-step time of a fresh network at the real batch, its throughput and peak memory."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    torch.manual_seed(0)
    net = workload.build(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = workload.optimizer(net)
    inputs = to_device(workload.inputs(workload.batch_size, workload.crop, seed=0), device, channels_last=channels_last)
    m.setup_s[workload.name] = time.perf_counter() - started
    m.leaf_modules[workload.name] = sum(1 for module in net.modules() if not list(module.children()))
    model = torch.compile(net) if compiled else net
    net.train()
    step = partial(training_step, workload, model, optimizer, inputs, precision)
    with float32_mode(precision):
        first_step_s = time_calls(step, warmup=0, repeats=1, device=device)[0]
        if workload.name not in m.flops_per_step and not compiled:
            m.flops_per_step[workload.name] = count_flops(step)
        times = time_calls(step, warmup=sizes.warmup_steps - 1, repeats=sizes.timed_steps, device=device)
    result = TrainingResult(
        workload.name,
        precision.name,
        channels_last,
        compiled,
        workload.batch_size,
        first_step_s,
        statistics.median(times),
        torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
    )
    m.training.append(result)
    if compiled:
        m.compile_s_per_module.append(max(first_step_s - result.step_s, 0.0) / m.leaf_modules[workload.name])
    tflops = m.flops_per_step.get(workload.name, 0) / result.step_s / 1e12
    peak = m.matmul_tflops.get(precision.name)
    TRAINING_TABLE.row(
        workload.name,
        precision.name,
        "channels_last" if channels_last else "NCHW",
        "yes" if compiled else "no",
        result.batch,
        f"{first_step_s:.1f}",
        f"{result.step_s * 1e3:.1f}",
        f"{result.images_per_s:.1f}",
        f"{tflops:.1f}",
        f"{tflops / peak:.0%}" if peak else "-",
        f"{result.peak_bytes / GIB:.1f}" if result.peak_bytes is not None else "n/a",
    )


def training_estimate_s(
    workload: Workload, precision: Precision, compiled: bool, device: torch.device, sizes: Sizes, m: Measurements
) -> float:
    """Set-up plus steps at the eager step time of this precision, else the slowest measured for the
    network (fp32, timed first); plus the compile time per leaf module measured so far, else the prior.
    0 for a network not timed yet: its first timing is what later estimates come from."""
    eager = m.eager(workload.name)
    if not eager:
        return 0.0
    same = [result.step_s for result in eager if result.precision == precision.name]
    step_s = min(same) if same else max(result.step_s for result in eager)
    cost = m.setup_s[workload.name] + (sizes.warmup_steps + sizes.timed_steps) * step_s
    if compiled:
        per_module = max(m.compile_s_per_module, default=COMPILE_PRIOR_S_PER_MODULE[device.type])
        cost += per_module * m.leaf_modules[workload.name]
    return cost


def measure_compiled(workload: Workload, device: torch.device, sizes: Sizes, m: Measurements) -> None:
    """torch.compile on the best eager setting: the only compile worth its minutes."""
    best = m.best_training(workload.name, eager_only=True)
    precision = PRECISIONS[best.precision] if best else PRECISIONS["bf16"]
    measure_training(
        workload,
        precision,
        channels_last=bool(best and best.channels_last),
        compiled=True,
        device=device,
        sizes=sizes,
        m=m,
    )


def measure_score_inference(workload: ICDWorkload, device: torch.device, sizes: Sizes, m: Measurements) -> None:
    """`image_scores` as the score step runs it: one VOC-sized image at a time on the canvas, fp32 under
    PyTorch's defaults, the four maps back on the CPU."""
    torch.manual_seed(0)
    net = workload.build(device).eval()
    rng = np.random.default_rng(0)
    height, width = sizes.image
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    regions = block_superpixels(rng, height, width, sizes.superpixels)
    call = partial(
        image_scores,
        net,
        image,
        regions,
        [3, 15],
        canvas=sizes.canvas,
        inference_scale=workload.config["seeds"]["inference_scale"],
        normalise=NORMALISATION,
    )
    seconds = statistics.median(time_calls(call, warmup=2, repeats=sizes.inference_images, device=device))
    m.inference_s_per_image = seconds
    INFERENCE_TABLE.row(
        f"score inference ({width}x{height} on {sizes.canvas})",
        "fp32, PyTorch defaults, 1 image",
        f"{seconds * 1e3:.1f}",
        f"{1 / seconds:.1f}",
    )


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _single_threaded() -> None:
    """Pool initialiser: one thread per process, as each seed shard runs (`threads: 1`)."""
    torch.set_num_threads(1)


def _refine_seed_shape(image: np.ndarray, seed: np.ndarray, params: dict) -> tuple[int, int]:
    return refine_seed(image, seed, **params).shape


def measure_seed_crf(config: dict, sizes: Sizes, m: Measurements) -> None:
    """`refine_seed` (the seed step's CRF) per image on one thread, then images/s over one single-threaded
    process per core (timed after every worker has started and run once)."""
    height, width = sizes.image
    image, seed = seed_crf_case(np.random.default_rng(0), height, width)
    params = {**config["crf"], "num_classes": NUM_CLASSES}
    with torch_threads(1):
        refine_seed(image, seed, **params)  # warm-up: the cached spatial filter, the allocator
        one = statistics.median(
            time_calls(
                partial(refine_seed, image, seed, **params),
                warmup=0,
                repeats=sizes.crf_repeats,
                device=torch.device("cpu"),
            )
        )
    INFERENCE_TABLE.row(
        f"seed CRF ({width}x{height}, {SEED_DENSITY:.0%} seeded)",
        "refine_seed, 1 thread",
        f"{one * 1e3:.0f}",
        f"{1 / one:.1f}",
    )
    processes = len(os.sched_getaffinity(0))
    count = processes * sizes.crf_images_per_process
    with ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_single_threaded
    ) as pool:
        list(pool.map(_refine_seed_shape, [image] * processes, [seed] * processes, [params] * processes))
        start = time.perf_counter()
        list(pool.map(_refine_seed_shape, [image] * count, [seed] * count, [params] * count))
        m.crf_images_per_s = count / (time.perf_counter() - start)
    m.crf_processes = processes
    INFERENCE_TABLE.row(
        f"seed CRF ({width}x{height}, {SEED_DENSITY:.0%} seeded)",
        f"{processes} processes x 1 thread, {count} images",
        f"{1e3 / m.crf_images_per_s:.0f}",
        f"{m.crf_images_per_s:.1f}",
    )


# ---------------------------------------------------------------------------------------------
# DDP


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ddp_worker(
    rank: int, world: int, port: int, backend: str, config: dict, sizes: Sizes, precision_name: str, results
) -> None:
    """One DDP process: ICD steps at the global batch split over the ranks. Rank 0 reports the median
    step time and how far the ranks' weights and sign-flip EMA drifted apart (0: DDP averaged the
    gradients and the sign flip all-reduced its statistics, so every rank took the same step)."""
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        device = torch.device("cuda", rank) if backend == "nccl" else torch.device("cpu")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        else:
            torch.set_num_threads(1)
        workload, precision = ICDWorkload(config, sizes), PRECISIONS[precision_name]
        torch.manual_seed(0)
        net = workload.build(device)
        optimizer = workload.optimizer(net)
        model = nn.parallel.DistributedDataParallel(net, device_ids=[rank] if device.type == "cuda" else None)
        inputs = to_device(workload.inputs(workload.batch_size // world, workload.crop, seed=rank), device)
        with float32_mode(precision):
            times = time_calls(
                partial(training_step, workload, model, optimizer, inputs, precision),
                warmup=sizes.warmup_steps,
                repeats=sizes.timed_steps,
                device=device,
            )
        state = torch.cat([tensor.detach().double().flatten() for tensor in [*net.parameters(), net.sign_flip.stored]])
        gathered = [torch.empty_like(state) for _ in range(world)]
        dist.all_gather(gathered, state)
        drift = max(float((other - gathered[0]).abs().max()) for other in gathered) / float(gathered[0].abs().max())
        if rank == 0:
            results.put((statistics.median(times), drift))
    finally:
        dist.destroy_process_group()


def run_ddp(world: int, backend: str, config: dict, sizes: Sizes, precision_name: str) -> tuple[float, float]:
    """(median step seconds, weight drift) of `world` spawned DDP processes, ended if this one is interrupted."""
    context = torch.multiprocessing.get_context("spawn")
    results = context.SimpleQueue()
    processes = torch.multiprocessing.start_processes(
        ddp_worker,
        args=(world, free_port(), backend, config, sizes, precision_name, results),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    try:
        while not processes.join():
            pass
    except BaseException:
        for process in processes.processes:
            if process.is_alive():
                process.terminate()
        raise
    return results.get()


def measure_ddp(workload: ICDWorkload, device: torch.device, sizes: Sizes, m: Measurements) -> None:
    best = m.best_training(workload.name, eager_only=True)
    precision_name = best.precision if best else "bf16"
    step_s, drift = run_ddp(2, "nccl", workload.config, sizes, precision_name)
    single = [r for r in m.eager(workload.name) if r.precision == precision_name and not r.channels_last]
    scaling = f"{workload.batch_size / step_s / single[0].images_per_s:.2f}x" if single else "-"
    DDP_TABLE.row(
        workload.name,
        "2 x nccl",
        precision_name,
        workload.batch_size,
        f"{step_s * 1e3:.1f}",
        f"{workload.batch_size / step_s:.1f}",
        scaling,
        f"{drift:.1e}",
    )


def ddp_unavailable(device: torch.device) -> str | None:
    if device.type != "cuda":
        return f"the device is {device.type}; a two-process DDP step needs >= 2 GPUs"
    count = torch.cuda.device_count()
    return None if count >= 2 else f"{count} GPU here; a two-process DDP step needs >= 2"


# ---------------------------------------------------------------------------------------------
# Budget


class BudgetExceeded(BaseException):
    """Raised inside an item when the budget runs out. A BaseException, so that no `except Exception`
    on its way (torch.compile has several) swallows it."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise BudgetExceeded in the main thread after `seconds` (SIGALRM: checked between Python
    bytecodes, so a single long CUDA call finishes first)."""

    def expire(signum, frame):
        raise BudgetExceeded

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Item:
    """One measurement. `estimate_s` is asked just before the item would start, so it can use what was
    measured before it (0: nothing predicts it, try it); `limit_s` caps its own run; `unavailable` says
    why this machine cannot run it at all; `report` prints a line about it (skipped, cut off, failed)
    where its results would have gone."""

    name: str
    run: Callable[[], None]
    report: Callable[[str], None]
    estimate_s: Callable[[], float] = lambda: 0.0
    limit_s: float = math.inf
    unavailable: str | None = None


class BudgetPlanner:
    """Runs items in the order given (most valuable first) inside `budget_s`.

    An item whose estimate exceeds what is left is skipped, and later, cheaper items still get their
    turn; one that runs past the end of the budget (or its own limit) is cut off; one that fails is
    reported and the run goes on. `outcomes` holds done / skipped / cut off / failed per item, `seconds`
    what each took.
    """

    def __init__(
        self,
        budget_s: float,
        *,
        started: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        after_each: Callable[[], None] = lambda: None,
    ) -> None:
        self.budget_s, self.clock, self.after_each = budget_s, clock, after_each
        self.started = clock() if started is None else started
        self.outcomes: dict[str, str] = {}
        self.seconds: dict[str, float] = {}

    def left_s(self) -> float:
        return self.budget_s - (self.clock() - self.started)

    def run(self, items: list[Item]) -> None:
        for item in items:
            if item.unavailable:
                self.outcomes[item.name] = "skipped"
                item.report(f"skipped ({item.unavailable})")
                continue
            estimate, left = item.estimate_s(), self.left_s()
            if left <= 0 or estimate > left:
                self.outcomes[item.name] = "skipped"
                item.report(f"skipped: needs ~{estimate:.0f} s, {max(left, 0):.0f} s of the budget left")
                continue
            started = self.clock()
            try:
                with deadline(min(left, item.limit_s)):
                    item.run()
                self.outcomes[item.name] = "done"
            except BudgetExceeded:
                self.outcomes[item.name] = "cut off"
                item.report(f"cut off after {min(left, item.limit_s):.0f} s (its share of the budget)")
            except Exception as error:  # a failed compile or an out-of-memory configuration: report, go on
                self.outcomes[item.name] = "failed"
                message = str(error).strip().splitlines()[0] if str(error).strip() else ""
                item.report(f"failed: {type(error).__name__}: {message[:160]}")
            self.after_each()
            self.seconds[item.name] = self.clock() - started


def release_memory() -> None:
    """Drop the finished item's tensors (a failed item's traceback held them) and the cached blocks."""
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# The run


def planned_items(config: dict, sizes: Sizes, device: torch.device, budget_s: float, m: Measurements) -> list[Item]:
    """Everything to measure, most valuable first: peaks, checks, eager fp32/bf16, TF32, inference and
    CRF, DDP, channels_last, compile."""
    icd = ICDWorkload(config, sizes)
    workloads = [icd, DeepLabWorkload("vgg16", config, sizes), DeepLabWorkload("resnet101", config, sizes)]
    precisions = device_precisions(device)

    def training(workload: Workload, precision: Precision, channels_last: bool) -> Item:
        layout = "channels_last" if channels_last else "NCHW"
        return Item(
            f"train {workload.name} {precision.name} {layout}",
            partial(
                measure_training,
                workload,
                precision,
                channels_last=channels_last,
                compiled=False,
                device=device,
                sizes=sizes,
                m=m,
            ),
            partial(TRAINING_TABLE.row, workload.name, precision.name, layout, "no"),
            partial(training_estimate_s, workload, precision, False, device, sizes, m),
        )

    def compiled(workload: Workload) -> Item:
        def estimate_s() -> float:
            best = m.best_training(workload.name, eager_only=True)
            return training_estimate_s(workload, PRECISIONS[best.precision if best else "bf16"], True, device, sizes, m)

        return Item(
            f"train {workload.name} compiled",
            partial(measure_compiled, workload, device, sizes, m),
            partial(TRAINING_TABLE.row, workload.name, "best", "best", "yes"),
            estimate_s,
        )

    items = [
        Item(
            "matmul peak",
            partial(measure_matmul_peaks, precisions, sizes.matmul_side, device, m),
            partial(MATMUL_TABLE.row, "all"),
        )
    ]
    items += [
        Item(
            f"check {w.name}",
            partial(check_workload, w, precisions, device, sizes, m),
            partial(CHECK_TABLE.row, w.name),
            limit_s=CHECK_SHARE_OF_BUDGET * budget_s,
        )
        for w in workloads
    ]
    first, later = [p for p in precisions if p.name != "tf32"], [p for p in precisions if p.name == "tf32"]
    items += [training(w, p, False) for w in workloads for p in first]
    items += [training(w, p, False) for w in workloads for p in later]
    items.append(
        Item(
            "score inference",
            partial(measure_score_inference, icd, device, sizes, m),
            partial(INFERENCE_TABLE.row, "score inference"),
        )
    )
    items.append(
        Item("seed CRF", partial(measure_seed_crf, config, sizes, m), partial(INFERENCE_TABLE.row, "seed CRF"))
    )
    items.append(
        Item(
            "DDP",
            partial(measure_ddp, icd, device, sizes, m),
            lambda text: note(f"DDP: {text}"),
            lambda: DDP_START_PRIOR_S + 2 * training_estimate_s(icd, PRECISIONS["bf16"], False, device, sizes, m),
            unavailable=ddp_unavailable(device),
        )
    )
    items += [training(w, p, True) for w in workloads for p in reversed(precisions)]
    items += [compiled(w) for w in workloads]
    return items


def print_schedules(config: dict, sizes: Sizes, m: Measurements, tiny: bool) -> None:
    """The paper's schedules at the best measured settings: ICD 20 epochs of 330 iterations at batch 32,
    each DeepLab 20k iterations at batch 10, score inference and the seed CRF over VOC's 10,582 images.
    `runs` is how many such jobs the default pipeline makes (one ICD training per network of `networks`, each
    priced as the full one: an upper bound, the Table 3 ablation network has no top-down branch)."""
    from icd.networks import configured_networks
    from icd.train import training_epochs

    icd, deeplab = config["icd"], config["deeplab"]
    icd_runs = len(configured_networks(config, saliency=False))
    iterations_per_epoch = VOC_TRAIN_AUG_IMAGES // icd["batch_size"]  # the last partial batch is dropped
    epochs = training_epochs(icd["epochs"], VOC_TRAIN_AUG_IMAGES, VOC_TRAIN_AUG_IMAGES)  # no extra images
    rows = [
        (
            "ICD training",
            f"{epochs} epochs x {iterations_per_epoch} it, batch {icd['batch_size']}",
            "ICD",
            epochs * iterations_per_epoch * icd["batch_size"],
            icd_runs,
        )
    ]
    for backbone in deeplab["backbones"]:
        name = {"vgg16": "DeepLab VGG16", "resnet101": "DeepLab ResNet101"}[backbone]
        rows.append(
            (
                name,
                f"{deeplab['iterations']:,} it, batch {deeplab['batch_size']}",
                name,
                deeplab["iterations"] * deeplab["batch_size"],
                len(deeplab["seeds"]) + len(deeplab["baselines"]),
            )
        )
    if tiny:
        note("(--tiny: toy networks and images; the times below only show that the estimate is computed)")
    for stage, schedule, workload, images, runs in rows:
        best = m.best_training(workload)
        if best is None:
            SCHEDULE_TABLE.row(stage, schedule, "not measured")
            continue
        checked = m.checks_passed.get((workload, best.precision))
        setting = f"{best.setting()} ({best.images_per_s:.1f} img/s)" + ("" if checked else ", check not passed")
        one = images / best.images_per_s
        SCHEDULE_TABLE.row(stage, schedule, setting, duration(one), runs, duration(one * runs))
    if m.inference_s_per_image is None:
        SCHEDULE_TABLE.row("score inference", f"{VOC_TRAIN_AUG_IMAGES:,} images on {sizes.canvas}", "not measured")
    else:
        one = VOC_TRAIN_AUG_IMAGES * m.inference_s_per_image
        SCHEDULE_TABLE.row(
            "score inference",
            f"{VOC_TRAIN_AUG_IMAGES:,} images on {sizes.canvas}",
            f"fp32 ({1 / m.inference_s_per_image:.1f} img/s)",
            duration(one),
            icd_runs,
            duration(one * icd_runs),
        )
    if m.crf_images_per_s is None:
        SCHEDULE_TABLE.row("seed CRF", f"{VOC_TRAIN_AUG_IMAGES:,} images", "not measured")
    else:
        one = VOC_TRAIN_AUG_IMAGES / m.crf_images_per_s
        SCHEDULE_TABLE.row(
            "seed CRF",
            f"{VOC_TRAIN_AUG_IMAGES:,} images",
            f"{m.crf_processes} processes ({m.crf_images_per_s:.1f} img/s)",
            duration(one),
            1,
            duration(one),
        )


def describe(device: torch.device, sizes: Sizes, budget_s: float, tiny: bool) -> str:
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        machine = (
            f"{properties.name} ({properties.total_memory / GIB:.0f} GiB, {torch.cuda.device_count()} GPU), "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    else:
        machine = "CPU"
    return (
        f"GPU benchmark on {machine}; torch {torch.__version__}; {len(os.sched_getaffinity(0))} CPU cores. "
        f"{'TINY sizes (toy networks, numbers meaningless)' if tiny else 'Paper sizes'}: ICD width "
        f"{sizes.icd_width:g} batch {sizes.icd_batch} at {sizes.icd_crop}, DeepLab width {sizes.deeplab_width:g} "
        f"batch {sizes.deeplab_batch} at {sizes.deeplab_crop}, checks {sizes.check_batch} images at "
        f"{sizes.check_crop}, inference canvas {sizes.canvas}; {sizes.warmup_steps} warm-up + median of "
        f"{sizes.timed_steps} steps; budget {budget_s:.0f} s."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget of the whole run (s)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when there is one; cpu with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: every code path in seconds")
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    config = paper_config()
    sizes = tiny_sizes(config) if args.tiny else paper_sizes(config)
    if args.tiny and device.type == "cpu":
        torch.set_num_threads(1)  # toy sizes gain nothing from threads, which stall on a shared machine
    print(describe(device, sizes, args.budget_s, args.tiny), flush=True)
    note(
        "Tolerances: "
        + "; ".join(
            f"{p.name} {p.tolerance:g} of max |reference|, decided <= {p.decision_share:.1%} off, routed l2 <= "
            f"{p.routed_tolerance:g}"
            for p in device_precisions(device)
        )
    )
    measurements = Measurements()
    planner = BudgetPlanner(args.budget_s, started=STARTED, after_each=release_memory)
    planner.run(planned_items(config, sizes, device, args.budget_s, measurements))
    print_schedules(config, sizes, measurements, args.tiny)
    budget = Table(
        f"Budget: {time.monotonic() - STARTED:.0f} of {args.budget_s:.0f} s", [("item", 42), ("outcome", 8), ("s", 6)]
    )
    for name, outcome in planner.outcomes.items():
        budget.row(name, outcome, f"{planner.seconds[name]:.1f}" if name in planner.seconds else "")


if __name__ == "__main__":
    main()
