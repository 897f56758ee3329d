"""Local GPU assignment against a fake `nvidia-smi`: parsing, CPU fallback, and concurrent claims."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from wsss.core import devices
from wsss.core.errors import ConfigError

TWO_GPUS = """\
GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa-0000)
GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb-1111)
"""


@pytest.fixture
def fake_smi(tmp_path, monkeypatch):
    """Put an `nvidia-smi` printing the given listing first on PATH; no CUDA_VISIBLE_DEVICES set."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(devices, "_held", [])

    def install(listing: str, exit_code: int = 0) -> Path:
        (tmp_path / "listing.txt").write_text(listing)
        script = bin_dir / "nvidia-smi"
        script.write_text(f'#!/bin/sh\n[ "$1" = "-L" ] || exit 9\ncat {tmp_path / "listing.txt"}\nexit {exit_code}\n')
        script.chmod(0o755)
        return bin_dir

    return install


def test_listing_parsed_and_mig_slices_replace_their_gpu(fake_smi):
    fake_smi(
        TWO_GPUS + "  MIG 1g.10gb     Device  0: (UUID: MIG-cccc-2222)\n"
        "  MIG 1g.10gb     Device  1: (UUID: MIG-dddd-3333)\n"
        "GPU 2: NVIDIA A100 (UUID: GPU-eeee-4444)\nsome warning line\n"
    )
    assert devices.list_gpus() == ["GPU-aaaa-0000", "MIG-cccc-2222", "MIG-dddd-3333", "GPU-eeee-4444"]


def test_no_driver_means_cpu_and_environment_untouched(fake_smi, tmp_path, caplog, monkeypatch):
    fake_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", exit_code=9)
    with caplog.at_level(logging.INFO, logger="wsss.core.devices"):
        devices.assign_local_gpus(1, lock_dir=tmp_path / "locks")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert "running on the CPU" in caplog.text
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no nvidia-smi at all
    devices.assign_local_gpus(1, lock_dir=tmp_path / "locks")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_a_preset_choice_stands(fake_smi, tmp_path, monkeypatch):
    fake_smi(TWO_GPUS)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    devices.assign_local_gpus(1, lock_dir=tmp_path / "locks")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3"
    assert not (tmp_path / "locks").exists()


def test_zero_gpus_hides_them_all(fake_smi, tmp_path):
    fake_smi(TWO_GPUS)
    devices.assign_local_gpus(0, lock_dir=tmp_path / "locks")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_asking_for_more_gpus_than_the_node_has_fails_clearly(fake_smi, tmp_path):
    fake_smi(TWO_GPUS)
    with pytest.raises(ConfigError, match=r"--gpus 3: this node has only 2 GPU"):
        devices.assign_local_gpus(3, lock_dir=tmp_path / "locks")
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def test_claims_in_one_process_take_distinct_gpus(fake_smi, tmp_path):
    fake_smi(TWO_GPUS)
    locks = tmp_path / "locks"
    devices.assign_local_gpus(2, lock_dir=locks)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa-0000,GPU-bbbb-1111"
    assert sorted(p.name for p in locks.iterdir()) == ["GPU-aaaa-0000.lock", "GPU-bbbb-1111.lock"]
    assert (locks / "GPU-aaaa-0000.lock").read_text() == f"{os.getpid()}\n"
    assert locks.stat().st_mode & 0o1777 == 0o1777


CLAIMER = textwrap.dedent("""
    import json, logging, os, sys, time
    from wsss.core.devices import assign_local_gpus
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    start = time.monotonic()
    assign_local_gpus(int(sys.argv[2]), lock_dir=sys.argv[1], poll_seconds=0.05)
    claimed = time.time()
    time.sleep(float(sys.argv[3]))
    print(json.dumps({"gpus": os.environ["CUDA_VISIBLE_DEVICES"], "claimed": claimed, "released": time.time()}))
""")


def _claimers(tmp_path: Path, count: int, processes: int, hold: float) -> list[tuple[dict, str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(devices.__file__).parents[1])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(tmp_path / "locks"), str(count), str(hold)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(processes)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append((json.loads(out), err))
    return results


def test_concurrent_jobs_never_share_a_gpu_and_the_extra_one_waits(fake_smi, tmp_path):
    fake_smi(TWO_GPUS)
    results = _claimers(tmp_path, count=1, processes=4, hold=1.5)
    claims = [claim for claim, _ in results]
    assert {claim["gpus"] for claim in claims} == {"GPU-aaaa-0000", "GPU-bbbb-1111"}
    for i, a in enumerate(claims):  # brute force: intervals on the same GPU never overlap
        for b in claims[i + 1 :]:
            if a["gpus"] == b["gpus"]:
                assert a["released"] <= b["claimed"] or b["released"] <= a["claimed"], (a, b)
    assert sum("waiting for 1 free GPU(s)" in err for _, err in results) >= 2


def test_a_two_gpu_job_waits_for_both_without_holding_half(fake_smi, tmp_path):
    fake_smi(TWO_GPUS)
    results = _claimers(tmp_path, count=2, processes=2, hold=1.0)
    first, second = sorted((claim for claim, _ in results), key=lambda claim: claim["claimed"])
    assert first["gpus"] == second["gpus"] == "GPU-aaaa-0000,GPU-bbbb-1111"
    assert second["claimed"] >= first["released"]


def test_a_crashed_job_releases_its_gpu(fake_smi, tmp_path):
    fake_smi(TWO_GPUS)
    env = {**os.environ, "PYTHONPATH": str(Path(devices.__file__).parents[1])}
    crash = (
        "import os; from wsss.core.devices import assign_local_gpus; "
        f"assign_local_gpus(2, lock_dir={str(tmp_path / 'locks')!r}); os._exit(1)"
    )
    assert subprocess.run([sys.executable, "-c", crash], env=env).returncode == 1
    started = time.monotonic()
    devices.assign_local_gpus(2, lock_dir=tmp_path / "locks", poll_seconds=0.05)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa-0000,GPU-bbbb-1111"
    assert time.monotonic() - started < 5
