"""The SLURM profile on a real one-node SLURM cluster, and the sbatch lines it gives GPU steps.

The cluster test installs Debian's slurm-wlm and munge when they are missing (root + apt-get; it
skips, saying why, only where neither is possible), starts munged, slurmctld and slurmd from one
temporary folder, and runs the tiny synthetic pipeline up to the superpixel shards through
`--profile profiles/slurm`, with the cluster's partition in place of the profile's placeholders.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from shutil import rmtree
from types import SimpleNamespace

import pytest
import yaml

from tests.slurm_cluster import OneNodeCluster, SlurmUnavailable, ensure_installed
from tests.workflow_helpers import TINY, snakemake
from wsss.core.config import PROJECT_ROOT
from wsss.core.shards import ShardStore

PROFILE = PROJECT_ROOT / "profiles" / "slurm"
SNAKEMAKE_TIMEOUT = 300
SUBMITTED = re.compile(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)")


def profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def require_plugin():
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.fail("snakemake-executor-plugin-slurm is missing: pip install -e '.[slurm]' (make test does)")


def test_profile_keeps_the_placeholders_a_user_replaces():
    settings = profile()
    assert settings["executor"] == "slurm" and settings["jobs"] >= 1
    defaults = settings["default-resources"]
    assert defaults["slurm_partition"].startswith("CHANGE_ME") and defaults["slurm_account"].startswith("CHANGE_ME")
    assert {"runtime", "mem_mb", "cpus_per_task"} <= set(defaults)
    for resources in settings["set-resources"].values():
        assert resources["slurm_partition"].startswith("CHANGE_ME") and resources["gpu_model"].startswith("CHANGE_ME")


def planned_jobs(output: str) -> list[tuple[str, int, dict, str]]:
    """(rule, threads, resources, shell command or "") of each job Snakemake lists (--printshellcmds)."""
    jobs = []
    for rule, block, command in re.findall(
        r"^rule (\w+):\n((?:    .*\n)+)(?:Shell command: (.*)$)?", output, re.MULTILINE
    ):
        threads = re.search(r"^    threads: (\d+)$", block, re.MULTILINE)
        listing = re.search(r"^    resources: (.*)$", block, re.MULTILINE).group(1)
        resources = dict(item.split("=", 1) for item in listing.split(", "))
        resources = {key: int(value) if value.isdigit() else value for key, value in resources.items()}
        jobs.append((rule, int(threads.group(1)) if threads else 1, resources, command))
    return jobs


def test_gpu_steps_get_gpus_and_cpus_per_gpu_in_their_sbatch_line(tmp_path):
    """Every step that takes `--gpus` gets one GPU from the profile, as Snakemake merges both profiles
    (dry run), and the plugin turns that into --gpus/--cpus-per-gpu; CPU steps get --cpus-per-task."""
    require_plugin()
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    result = snakemake(tmp_path, "-n", "--printshellcmds", "--profile", str(PROFILE))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    gpu_rules = {rule for rule, _, _, command in jobs if " --gpus " in command}
    assert gpu_rules == set(profile()["set-resources"]) and "train_icd" in gpu_rules
    for rule, threads, resources, command in jobs:
        job = SimpleNamespace(resources=SimpleNamespace(**resources, get=resources.get), threads=threads)
        params = {
            "run_uuid": "run",
            "slurm_logfile": "log",
            "comment_str": rule,
            "account": "",
            "partition": "",
            "workdir": "",
        }
        sbatch = (get_submit_command(job, params) + set_gres_string(job)).split()
        if rule in gpu_rules:
            assert " --gpus 1 " in command, (rule, command)
            assert "--gpus=CHANGE_ME_gpu_model:1" in sbatch and "--cpus-per-gpu=8" in sbatch, (rule, sbatch)
            assert not any(arg.startswith("--cpus-per-task") for arg in sbatch), (rule, sbatch)
        else:
            assert f"--cpus-per-task={resources['cpus_per_task']}" in sbatch, (rule, sbatch)
            assert not any("gpu" in arg for arg in sbatch), (rule, sbatch)


@pytest.fixture(scope="module")
def cluster():
    require_plugin()
    try:
        ensure_installed()
    except SlurmUnavailable as reason:
        pytest.skip(f"no SLURM cluster can be started here: {reason}")
    # Not under pytest's tmp folder: munged runs as the munge user, who cannot enter that.
    root = Path(tempfile.mkdtemp(prefix="icd-slurm-"))
    cluster = OneNodeCluster(root)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        rmtree(root, ignore_errors=True)


@contextmanager
def kill_children_after(seconds: float):
    """SIGKILL this process's children if they outlive `seconds`: Snakemake defers SIGTERM while it waits on
    cluster jobs, and the shared snakemake() helper has no timeout. Yields a flag set when it fired."""
    fired = threading.Event()

    def kill():
        fired.set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == os.getpid():
                os.kill(pid, signal.SIGKILL)

    timer = threading.Timer(seconds, kill)
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def cluster_overrides(settings: dict, cluster: OneNodeCluster) -> list[str]:
    """The edits a user makes to the profile, for this cluster: its partition, no GPUs, small memory
    requests and no account (without slurmdbd the plugin fails to guess one and submits without);
    plus status checks through squeue, as there is no accounting."""

    def resource_list(resources: dict) -> list[str]:
        resources = {**resources, "slurm_partition": cluster.partition, "mem_mb": 500}
        for key in ("slurm_account", "gpu_model", "cpus_per_gpu"):
            resources.pop(key, None)
        if "gpu" in resources:
            resources["gpu"] = 0
        return [f"{key}={value}" for key, value in resources.items()]

    per_rule = [
        f"{rule}:{item}" for rule, resources in settings["set-resources"].items() for item in resource_list(resources)
    ]
    return [
        "--default-resources",
        *resource_list(settings["default-resources"]),
        "--set-resources",
        *per_rule,
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "2",
        "--slurm-keep-successful-logs",
    ]


@pytest.mark.slow
@pytest.mark.slurm
def test_pipeline_runs_through_the_slurm_profile_on_a_real_cluster(cluster, tmp_path, monkeypatch):
    for name, value in cluster.env.items():
        monkeypatch.setenv(name, value)
    results = tmp_path / "results" / TINY["run"]
    shards = [f"results/{TINY['run']}/superpixels/shard_{shard}.npz" for shard in range(2)]
    with kill_children_after(SNAKEMAKE_TIMEOUT) as timed_out:
        result = snakemake(tmp_path, "--profile", str(PROFILE), *cluster_overrides(profile(), cluster), "--", *shards)
    output = result.stdout + result.stderr
    assert not timed_out.is_set(), f"Snakemake still ran after {SNAKEMAKE_TIMEOUT} s:\n{output[-4000:]}"
    assert result.returncode == 0, output[-4000:] + cluster.logs()

    dataset = json.loads((results / "data" / "dataset.json").read_text())
    assert dataset["counts"] == {"train_aug": 16, "val": 4, "test": 2}
    superpixels = ShardStore(tmp_path / shard for shard in shards)
    assert superpixels.ids() == sorted(dataset["splits"]["train_aug"])
    assert all(superpixels[image_id].ndim == 2 for image_id in superpixels.ids())

    threads = {rule: count for rule, count, _, _ in planned_jobs(output)}
    submitted = [
        (
            job_id,
            Path(log).relative_to(tmp_path / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_"),
            Path(log),
        )
        for job_id, log in SUBMITTED.findall(output)
    ]
    assert sorted(rule for _, rule, _ in submitted) == [
        "pretrain_backbone",
        "superpixels",
        "superpixels",
        "synthesize_data",
        "validate_data",
    ]
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    for job_id, rule, log in submitted:
        job = cluster.job(job_id)
        assert (job["JobState"], job["NodeList"], job["JobName"]) == ("COMPLETED", cluster.node, run_id), job
        assert (Path(job["WorkDir"]), int(job["NumCPUs"])) == (tmp_path, threads[rule]), (rule, job)
        assert log.is_file() and f"rule {rule}:" in log.read_text(), log
