"""GPU assignment for local runs: Snakemake counts `resources: gpu` but never says which GPU a job gets.

Each GPU job claims its GPUs with non-blocking `flock`s on one lock file per GPU under a node-wide
folder, holds them until the process exits (the kernel drops them even after a crash), and exports
CUDA_VISIBLE_DEVICES before torch initialises CUDA. Where the scheduler or the user already set
CUDA_VISIBLE_DEVICES (SLURM, a shell), that choice stands. GPUs are found with `nvidia-smi -L`, so
nothing here initialises CUDA.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wsss.core.errors import ConfigError

log = logging.getLogger(__name__)

VISIBLE = "CUDA_VISIBLE_DEVICES"
# Lines of `nvidia-smi -L`: "GPU 0: NVIDIA H100 (UUID: GPU-...)", and for MIG slices of the GPU
# above them "  MIG 1g.10gb Device 0: (UUID: MIG-...)".
_UNIT = re.compile(r"^\s*(GPU|MIG)\b.*\(UUID: ((?:GPU|MIG)-[^)\s]+)\)")

_held: list = []  # open lock files: a claim lasts as long as this process


def list_gpus() -> list[str]:
    """UUIDs of the node's usable GPUs (MIG slices instead of their parent GPU); [] without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi -L failed (%s): treating this node as having no GPU", exc)
        return []
    units: list[str] = []
    for line in listing.splitlines():
        match = _UNIT.match(line)
        if match is None:
            continue
        kind, uuid = match.groups()
        if kind == "MIG" and units and units[-1].startswith("GPU-"):
            units.pop()  # a GPU split into MIG slices is used through its slices only
        units.append(uuid)
    return units


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / "icd-gpu-locks"


def _try_lock(path: Path):
    """The open lock file if this process got the exclusive lock, else None."""
    handle = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o666), "r+")  # noqa: SIM115 (held while the GPU is claimed)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _open_lock_dir(lock_dir: Path) -> None:
    """Create the lock folder world-writable and sticky, so every user's jobs on the node share it."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    if lock_dir.stat().st_uid == os.getuid():
        lock_dir.chmod(0o1777)


def _cuda_initialised() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_initialized()


def assign_local_gpus(count: int, *, lock_dir: str | os.PathLike | None = None, poll_seconds: float = 5.0) -> None:
    """Give this process `count` free GPUs of the node through CUDA_VISIBLE_DEVICES, waiting for them.

    count 0 hides every GPU (the job declared none, so it must not share one unannounced). A node
    without GPUs runs on the CPU. Must run before torch initialises CUDA.
    """
    if count < 0:
        raise ConfigError(f"--gpus {count}: a rule's `resources: gpu` must be 0 or more")
    if VISIBLE in os.environ:
        log.info("%s=%r already set (scheduler or user): using it", VISIBLE, os.environ[VISIBLE])
        return
    if _cuda_initialised():
        raise RuntimeError("assign_local_gpus must run before CUDA is initialised")
    if count == 0:
        os.environ[VISIBLE] = ""
        log.info("this step declares no GPU: running on the CPU")
        return
    gpus = list_gpus()
    if not gpus:
        log.info("no NVIDIA GPU found (nvidia-smi -L): running on the CPU")
        return
    if count > len(gpus):
        raise ConfigError(
            f"--gpus {count}: this node has only {len(gpus)} GPU(s) ({', '.join(gpus)}). "
            "Lower the rule's `resources: gpu` or run on a bigger node."
        )
    lock_dir = Path(lock_dir) if lock_dir is not None else default_lock_dir()
    _open_lock_dir(lock_dir)
    waited = False
    while True:
        claimed = []
        for gpu in gpus:
            handle = _try_lock(lock_dir / f"{gpu}.lock")
            if handle is not None:
                claimed.append((gpu, handle))
                if len(claimed) == count:
                    break
        if len(claimed) == count:
            break
        for _, handle in claimed:  # release a partial claim so two jobs never deadlock on halves
            handle.close()
        if not waited:
            log.info(
                "waiting for %d free GPU(s): all %d are claimed by other jobs (locks in %s)", count, len(gpus), lock_dir
            )
            waited = True
        time.sleep(poll_seconds)
    _held.extend(handle for _, handle in claimed)
    os.environ[VISIBLE] = ",".join(gpu for gpu, _ in claimed)
    log.info("claimed GPU(s) %s", os.environ[VISIBLE])
