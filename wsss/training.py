"""What every trainer of the pipeline shares (ICD, DeepLab, the ResNet101 stand-in): the training loop, labels
as multi-hot vectors, the classification loss and monitor, the official poly schedule, the divergence error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.nn import functional as F
from tqdm import tqdm

from wsss.core.checkpoints import resume, save_checkpoint
from wsss.core.errors import ICDError


class TrainingDiverged(ICDError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def multi_hot(classes: list[int], num_foreground: int) -> np.ndarray:
    """Class indices 1..K -> a K-dim float vector (background is not a label)."""
    vector = np.zeros(num_foreground, np.float32)
    vector[np.asarray(classes, dtype=np.int64) - 1] = 1.0
    return vector


def poly_lr(base_lr: float, epoch: int, epochs: int, power: float) -> float:
    """The official per-epoch poly schedule: lr * (1 - epoch / epochs) ** power."""
    return base_lr * (1.0 - epoch / epochs) ** power


def rank_accuracy(class_logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """Official monitor: a present class counts as correct if it ranks within the top |labels| scores."""
    order = class_logits.argsort(dim=1, descending=True)
    counts = labels.sum(dim=1).long()
    correct = sum(int(labels[i, order[i, : counts[i]]].sum()) for i in range(len(labels)))
    return correct, int(counts.sum())


def cam_loss(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Multi-label sigmoid BCE summed over classes, averaged over images (`MultiSigmoidLoss`)."""
    bce = F.binary_cross_entropy_with_logits(class_logits, labels.to(class_logits.dtype), reduction="none")
    return bce.sum(1).mean()


Figures = dict[str, float]
"""What a trainer logs about one micro-batch, by name: numbers the loop sums until the next history record."""

Step = Callable[[Any, int, int], tuple[torch.Tensor, Figures]]
"""(one micro-batch, its unit, its step in the unit) -> (the loss to backpropagate, the figures to log besides it)."""

Record = Callable[[int, Figures, float, float], dict]
"""(units done, the figures summed since the last record, lr, seconds) -> the record's fields after the unit."""


def _added(sums: Figures, figures: Figures) -> Figures:
    return {**sums, **{key: sums.get(key, 0) + value for key, value in figures.items()}}


@dataclass
class TrainingLoop:
    """The one training loop of the pipeline: a trainer gives its step and its record, the loop does the rest.

    A run is `units` units (ICD counts epochs, DeepLab and the classifier iterations); a unit is
    `steps_per_unit` optimiser steps, a step `accumulation` micro-batches. Before each unit the loop sets
    the official poly lr (times each parameter group's `lr_mult`) and, with `reseed`, restarts torch's
    global RNG from (reseed, unit), so dropout masks depend on the unit alone and a resumed run draws what an
    uninterrupted one would. Each micro-batch goes through the trainer's step; a non-finite loss stops the
    run with `TrainingDiverged` before it touches the weights, so the last checkpoint stays good. Under
    torchrun (the process group `wsss.core.checkpoints.distributed` starts) the network is wrapped in DDP,
    which averages the gradients on each step's last micro-batch only. After every `log_interval` units,
    and the last, the figures the steps returned are summed over the steps and the processes (the whole
    batch's figures, not one process's share), the trainer turns them into a history record, and rank 0
    logs it as `<unit> {json}` on the trainer's logger `log`; after every `checkpoint_interval` units, and
    the last, rank 0 writes the checkpoint `resume` named.

    The checkpoint writer is a field so that a trainer can hand over its own reference to it: that is the
    name a test replaces to stop a run right after a checkpoint.
    """

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    _: KW_ONLY
    unit: str
    units: int
    lr: float
    poly_power: float
    reseed: int | None
    log: logging.Logger
    name: str  # the loss's name in a divergence error: "the <name> loss became nan at ..."
    advice: str  # the divergence error's last sentence: what to change
    desc: str  # the progress bar's
    progress: bool = True
    steps_per_unit: int = 1
    accumulation: int = 1
    log_interval: int = 1
    checkpoint_interval: int = 1
    position: Callable[[int, int, Figures], str] | None = None  # (unit, step, figures) -> where a loss diverged
    save_checkpoint: Callable[..., None] = save_checkpoint

    def __post_init__(self) -> None:
        """The loop runs where the network is, under the process group the trainer started (none: one process)."""
        self.device = next(self.net.parameters()).device
        distributed = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
        self.network = torch.nn.parallel.DistributedDataParallel(self.net) if self.world > 1 else self.net

    def resume(self, checkpoint: Path, run_id: str, inputs: dict[str, str], normalisation: str) -> int:
        """The first unit to train: after the last one of `checkpoint` if run `run_id` over `inputs` wrote it
        (its weights, optimiser state and history are loaded), else 0. Every checkpoint of this run goes there,
        recording `normalisation`. Called before `run`, so that a trainer can start its sample stream there."""
        self.checkpoint, self.run_id, self.inputs, self.normalisation = checkpoint, run_id, inputs, normalisation
        self.history, self.start = resume(checkpoint, run_id, inputs, self.net, self.optimizer, self.device, self.unit)
        return self.start

    def run(self, batches: Callable[[int], Iterable], step: Step, record: Record) -> list[dict]:
        """Train units `start`.. on `batches(unit)` (the unit's micro-batches, asked for once its lr and seed
        are set) through `step`; returns the whole history, the resumed part included. The figures summed
        for `record` hold the backpropagated loss as `loss` and the number of steps behind them as `steps`."""
        self.network.train()
        bar = tqdm(
            total=self.units * self.steps_per_unit,
            initial=self.start * self.steps_per_unit,
            desc=self.desc,
            disable=not self.progress or self.rank != 0,
            mininterval=2.0,
        )
        with bar:
            sums, steps, started = {}, 0, time.time()
            for unit in range(self.start, self.units):
                lr = poly_lr(self.lr, unit, self.units, self.poly_power)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr * group["lr_mult"]
                if self.reseed is not None:
                    torch.manual_seed(self.reseed * 1_000_003 + unit)
                for figures in self._steps(step, batches(unit), unit):
                    sums, steps = _added(sums, figures), steps + 1
                    bar.set_postfix(loss=f"{figures['loss']:.3f}", refresh=False)
                    bar.update()
                done = unit + 1
                if done % self.log_interval == 0 or done == self.units:
                    self._record(record, done, {**sums, "steps": steps}, lr, round(time.time() - started, 2))
                    sums, steps, started = {}, 0, time.time()
                if self.rank == 0 and (done % self.checkpoint_interval == 0 or done == self.units):
                    self.save_checkpoint(
                        self.checkpoint,
                        self.net,
                        self.optimizer,
                        unit,
                        self.history,
                        self.run_id,
                        self.inputs,
                        self.normalisation,
                    )
        return self.history

    def _steps(self, step: Step, batches: Iterable, unit: int) -> Iterator[Figures]:
        """The unit's optimiser steps, `accumulation` micro-batches each; yields each step's figures, summed
        over its micro-batches. DDP synchronises the gradients on a step's last micro-batch only."""
        for index, batch in enumerate(batches):
            micro = index % self.accumulation
            if micro == 0:
                self.optimizer.zero_grad(set_to_none=True)
                figures = {}
            last = micro == self.accumulation - 1
            with self.network.no_sync() if self.world > 1 and not last else contextlib.nullcontext():
                loss, found = step(batch, unit, index // self.accumulation)
                found = {"loss": float(loss.detach()), **found}
                if not math.isfinite(found["loss"]):
                    raise self._diverged(found, unit, index // self.accumulation)
                loss.backward()
            figures = _added(figures, found)
            if last:
                self.optimizer.step()
                yield figures

    def _diverged(self, figures: Figures, unit: int, index: int) -> TrainingDiverged:
        where = self.position(unit, index, figures) if self.position else f"{self.unit} {unit + 1}"
        return TrainingDiverged(
            f"the {self.name} loss became {figures['loss']} at {where}. The last good checkpoint is kept at "
            f"{self.checkpoint}. {self.advice}"
        )

    def _record(self, record: Record, done: int, totals: Figures, lr: float, seconds: float) -> None:
        if self.world > 1:
            summed = torch.tensor(list(totals.values()), dtype=torch.float64, device=self.device)
            dist.all_reduce(summed)
            totals = dict(zip(totals, summed.tolist(), strict=True))
        entry = {self.unit: done, **record(done, totals, lr, seconds)}
        self.history.append(entry)
        if self.rank == 0:
            self.log.info("%s %s", self.unit, json.dumps(entry))
