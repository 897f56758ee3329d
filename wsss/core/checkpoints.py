"""Training checkpoints (written and resumed by `wsss.training.TrainingLoop`) and processes, shared by the trainers.

A checkpoint holds the model, the optimiser, the history so far, the last finished step (an epoch for ICD, an iteration
for DeepLab, stored under "epoch"), the input normalisation it is trained on (`wsss.nets.normalisation`), the
fingerprint of the run's options and the content digest of each of its inputs (`wsss.core.digests`): a run resumes only
from a checkpoint of the same configuration over the same input bytes, so changed settings, new seeds, new superpixels
or a replaced weights file retrain from scratch instead of silently continuing another run. Under torchrun every process
trains and rank 0 writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from wsss.core.digests import changed_inputs
from wsss.core.errors import ConfigError
from wsss.core.files import save_torch, write_text
from wsss.nets.backbones import default_device

log = logging.getLogger(__name__)


def check_intervals(section: str, checkpoint_interval: int, log_interval: int) -> None:
    """A checkpoint must fall on a history record, or a resumed run could not rebuild its history."""
    if checkpoint_interval % log_interval:
        raise ConfigError(
            f"{section}.checkpoint_interval {checkpoint_interval} is not a multiple of "
            f"{section}.log_interval {log_interval}: a resumed run could not rebuild the history. "
            "Make it a multiple."
        )


def fingerprint(options: dict) -> str:
    """A short hash of everything that defines a training run, stored in its checkpoints."""
    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:16]


def distributed() -> tuple[int, int]:
    """(rank, world size) under torchrun, initialising the process group once; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return torch.distributed.get_rank(), world


def process_device(rank: int) -> torch.device:
    """This process's GPU under torchrun (LOCAL_RANK), else the default device."""
    device = default_device()
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def save_checkpoint(
    path: Path,
    net: torch.nn.Module,
    optimizer,
    step: int,
    history: list[dict],
    run_id: str,
    inputs: dict[str, str],
    normalisation: str,
) -> None:
    """Write the state after finished `step` atomically: a kill mid-write leaves the previous checkpoint.

    `inputs`: the content digest of each input, by name, so a rerun on other inputs never resumes it.
    `normalisation`: the input normalisation the network is trained on (`wsss.nets.normalisation`), recorded.
    """
    state = {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": step,
        "history": json.dumps(history),
        "fingerprint": run_id,
        "inputs": inputs,
        "normalisation": normalisation,
        "torch_rng": torch.get_rng_state(),
    }
    save_torch(state, path)


def save_trained(
    out_dir: Path,
    net: torch.nn.Module,
    history: list[dict],
    run_id: str,
    inputs: dict[str, str],
    normalisation: str,
    **metadata: str,
) -> None:
    """The finished run's `model.pt` (weights, `metadata` to rebuild the network, fingerprint and input
    digests: what it was trained from; the input `normalisation` it expects) and `history.json`."""
    save_torch(
        {
            "model": net.state_dict(),
            **metadata,
            "fingerprint": run_id,
            "inputs": inputs,
            "normalisation": normalisation,
        },
        out_dir / "model.pt",
    )
    write_text(out_dir / "history.json", json.dumps(history, indent=2) + "\n")


def resume(
    path: Path, run_id: str, inputs: dict[str, str], net: torch.nn.Module, optimizer, device: torch.device, unit: str
) -> tuple[list[dict], int]:
    """Load `path` into `net` and `optimizer` if it exists and was written by run `run_id` from `inputs`.

    Returns (history so far, first step to run); ([], 0) without a usable checkpoint. A checkpoint of
    another configuration, or of the same one over inputs whose content differs (or a checkpoint
    that predates input digests), is ignored with one log line saying why: it will be overwritten
    by the new run's first checkpoint. `unit` names a step in the log ("epoch", "iteration").
    """
    if not path.exists():
        return [], 0
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("fingerprint") != run_id:
        log.warning("%s was written by a different configuration; training from scratch", path)
        return [], 0
    changed = changed_inputs(state.get("inputs"), inputs)
    if changed:
        log.warning("%s was trained on other inputs (changed: %s); training from scratch", path, ", ".join(changed))
        return [], 0
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    start = int(state["epoch"]) + 1
    log.info("resuming from %s after %s %d", path, unit, start)
    return json.loads(state["history"]), start
