"""Running pipeline steps from tests: the TINY Snakemake config (tests/scenarios/tiny.yaml), `snakemake()`, training
killed or under torchrun, the checks on what a training wrote.

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
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml

from benchmarks.dryrun import snakemake_command
from tests.scenarios import scenario
from wsss.training import TrainingDiverged

TINY = scenario("tiny")


def snakemake(workdir: Path, *args: str, config: dict = TINY) -> subprocess.CompletedProcess:
    """Snakemake on the project's Snakefile in `workdir`, config.yaml overridden by `config` (workdir/tiny.yaml)."""
    (workdir / "tiny.yaml").write_text(yaml.safe_dump(config))
    return subprocess.run(snakemake_command(workdir, workdir / "tiny.yaml", *args), capture_output=True, text=True)


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


def assert_a_killed_run_resumes(
    command: Callable[[Path], list[str]], out_dir: Path, reference_dir: Path, unit: str, env: dict
) -> None:
    """`command(out_dir)`, a training process, SIGKILLed once it wrote its first checkpoint and then run again,
    resumes from that checkpoint (`assert_resumed_after`, `unit` the history's step key) to the history and the
    weights of the same command's uninterrupted run in `reference_dir`."""
    reference = json.loads((reference_dir / "history.json").read_text())
    kill_at_first_checkpoint(command(out_dir), out_dir, env)
    killed_after = torch.load(out_dir / "checkpoint.pt", weights_only=True)["epoch"]
    assert killed_after < reference[-1][unit] - 1  # 0-based: a checkpoint before the last step
    result = subprocess.run(command(out_dir), env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "resuming from" in result.stderr
    history = json.loads((out_dir / "history.json").read_text())
    assert_resumed_after(result.stderr, unit, killed_after, history, reference)
    assert differing_weights(trained_weights(reference_dir / "model.pt"), trained_weights(out_dir / "model.pt")) == []


def assert_divergence_keeps_the_checkpoint(train: Callable[..., object], checkpoint: Path, **exploding) -> None:
    """`train()` writes `checkpoint`; training again on top of it with the `exploding` settings must stop with
    TrainingDiverged, naming the checkpoint it keeps, and leave that checkpoint's bytes as they were."""
    train()
    before = checkpoint.read_bytes()
    with pytest.raises(TrainingDiverged, match=r"became (nan|inf).*checkpoint is kept at"):
        train(**exploding)
    assert checkpoint.read_bytes() == before


def trained_weights(path: Path) -> dict[str, torch.Tensor]:
    """The network weights a trainer's `model.pt` or `checkpoint.pt` holds."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def differing_weights(first: dict, second: dict) -> list[str]:
    """Names whose tensors differ between two state dicts (those in only one of them, if their keys differ); [] when
    every tensor is equal."""
    if first.keys() != second.keys():
        return sorted(set(first) ^ set(second))
    return [key for key in first if not torch.equal(first[key], second[key])]
