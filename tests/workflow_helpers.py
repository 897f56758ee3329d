"""Running pipeline steps from tests: the TINY Snakemake config, `snakemake()`, training killed or under torchrun.

Test modules import these; the finished TINY run itself is the session fixture `finished_run` in
tests/conftest.py, so the pipeline runs once per test session however many modules use it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from wsss.core.config import PROJECT_ROOT

TINY = {
    "run": "tiny",
    "synthetic": {"num_train": 16, "num_val": 4, "num_test": 2, "min_size": 48, "max_size": 64},
    "pretrain": {"num_images": 128, "image_size": 32, "epochs": 1, "batch_size": 16},
    "resnet_pretrain": {"iterations": 2, "batch_size": 4, "crop_size": 48, "log_interval": 1, "checkpoint_interval": 2},
    "synthetic_overrides": {
        "model": {"backbone": "vgg16_bn", "width": 0.0625},
        "superpixels": {"shards": 2, "feature_input_size": 65, "max_regions": 8},
        "icd": {"epochs": 2, "batch_size": 8, "crop_size": 48, "workers": 0},
        "deeplab": {
            "width": 0.0625,
            "seeds": ["icd_crf"],
            "baselines": ["gt"],
            "iterations": 2,
            "batch_size": 2,
            "crop_size": 48,
            "checkpoint_interval": 2,
            "log_interval": 1,
        },
    },
}


def snakemake(workdir: Path, *args: str, config: dict = TINY) -> subprocess.CompletedProcess:
    """Snakemake on the project's Snakefile in `workdir`, config.yaml overridden by `config` (workdir/tiny.yaml)."""
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(PROJECT_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(PROJECT_ROOT / "config.yaml"),
        str(workdir / "tiny.yaml"),
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True)


def run_under_torchrun(command: list[str], port: int) -> subprocess.CompletedProcess:
    """A `python -m <package> <verb> ...` command as 2 CPU processes under torchrun (gloo), one thread each."""
    launched = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(port),
        *command[1:],
    ]
    return subprocess.run(launched, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


def kill_at_first_checkpoint(command: list[str], out_dir: Path, env: dict) -> None:
    """Run a training command and SIGKILL it as soon as it has written `out_dir/checkpoint.pt`.

    Fails if the run finished (wrote model.pt) before it could be killed: the resume would go untested.
    """
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out_dir / "checkpoint.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out_dir / "model.pt").exists(), "the run finished before it could be killed"


def trained_records(log_text: str, unit: str) -> list[dict]:
    """The history records a training process logged itself (`<unit> {json}` lines): what it trained, not
    what it loaded from a checkpoint."""
    return [json.loads(found) for found in re.findall(rf"INFO [\w.]+: {unit} (\{{.*\}})$", log_text, re.MULTILINE)]


def timeless(history: list[dict]) -> list[dict]:
    """History records without their wall-clock seconds: what two runs of the same training share."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


def assert_resumed_after(
    log_text: str, unit: str, checkpoint_step: int, history: list[dict], reference: list[dict]
) -> None:
    """The process logged exactly the records after its checkpoint's step (0-based `checkpoint_step`), so it
    resumed: a restart from scratch, even a deterministic one, logs the first records again. Its whole
    history, the checkpoint's part included, equals the uninterrupted run's `reference`."""
    after_checkpoint = [record[unit] for record in reference if record[unit] > checkpoint_step + 1]
    assert after_checkpoint, "the checkpoint was the last step: nothing was left to resume"
    assert [record[unit] for record in trained_records(log_text, unit)] == after_checkpoint
    assert timeless(history) == timeless(reference)


def trained_weights(path: Path) -> dict[str, torch.Tensor]:
    """The network weights a trainer's `model.pt` or `checkpoint.pt` holds."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def differing_weights(first: dict, second: dict) -> list[str]:
    """Names whose tensors differ between two state dicts (those in only one of them, if their keys differ); [] when
    every tensor is equal."""
    if first.keys() != second.keys():
        return sorted(set(first) ^ set(second))
    return [key for key in first if not torch.equal(first[key], second[key])]
