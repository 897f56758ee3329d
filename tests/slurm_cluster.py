"""A throwaway one-node SLURM cluster for tests, built from Debian's `slurm-wlm` and `munge`.

Containers have no systemd, so the daemons are started by hand. Everything they read or write
(config, munge key and socket, state, logs, pid files) lives in one folder and their ports are
picked free, so /etc/slurm, /run/munge and any system SLURM stay untouched. Commands reach this
cluster only through the variables of `OneNodeCluster.env`; without them `scontrol` finds no
configuration and fails at once, so the SLURM plugin's `scontrol show config` at every Snakemake
start costs other runs nothing (a config pointing at a stopped controller would cost ~9 s each).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.apt import AptUnavailable, apt_install
from tests.scenarios import slurm_conf

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
_SBIN = ("/usr/sbin", "/sbin")


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or run here (not root, no apt-get, the install failed)."""


def find_command(name: str) -> str | None:
    """The command's path, looking in the sbin folders too (a non-login PATH may lack them)."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(_SBIN))


def ensure_installed(timeout: float = 600) -> None:
    """Install slurm-wlm and munge with apt-get unless every needed command is already there."""
    if all(find_command(name) for name in DAEMONS + CLIENTS):
        return
    try:
        result = apt_install(PACKAGES, recommends=False, timeout=timeout)
    except AptUnavailable as reason:
        raise SlurmUnavailable(f"slurm-wlm/munge are not installed: {reason}") from None
    # A post-install script may fail to start a service (no systemd) although the files are in place.
    missing = [name for name in DAEMONS + CLIENTS if not find_command(name)]
    if missing:
        raise SlurmUnavailable(f"`{' '.join(result.args)}` did not provide {missing}: {result.stderr[-1500:]}")


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports (all probes held open until each has one, so none repeats)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def memory_mb() -> int:
    """The machine's memory in MiB, from /proc/meminfo."""
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return int(match.group(1)) // 1024


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie waiting for a parent that never reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


class OneNodeCluster:
    """munged + slurmctld + slurmd serving one node (this machine) to one partition."""

    partition = "debug"
    node = "testnode"

    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.munge_dir = root / "munge"
        self.socket = self.munge_dir / "munge.socket"
        self.pid_files = {
            "munged": self.munge_dir / "munged.pid",
            "slurmctld": root / "slurmctld.pid",
            "slurmd": root / "slurmd.pid",
        }
        # At least 4 CPUs (slurmd told to trust the config): tiny test jobs are mostly start-up time and
        # should overlap on a 2-core machine rather than queue.
        self.cpus = max(os.cpu_count() or 1, 4)
        self.memory_mb = max(memory_mb() - 2048, memory_mb() // 2)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point SLURM's commands at this cluster (jobs inherit them)."""
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}

    def write_srun_shim(self) -> None:
        """An `srun` first on PATH that restores SLURM_CONF. Inside a job, the plugin's job step drops
        every SLURM_* variable before its nested `srun`, which then finds no config: a real cluster has
        one in /etc/slurm, which this throwaway cluster must not write."""
        shim = self.root / "bin" / "srun"
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {find_command("srun")} "$@"\n')
        shim.chmod(0o755)

    def write_config(self) -> None:
        """slurm.conf from tests/scenarios/slurm.conf, with this start's host, ports, folder and node size."""
        # slurmctld accepts only its own host name as controller; the node's name is free (slurmd -N).
        host = socket.gethostname().split(".")[0]
        controller_port, node_port = free_ports(2)
        self.root.chmod(0o755)  # munged runs as the munge user and must reach its folder
        for folder in ("state", "spool"):
            (self.root / folder).mkdir()
        self.conf.write_text(
            slurm_conf(
                host=host,
                controller_port=controller_port,
                node_port=node_port,
                munge_socket=self.socket,
                root=self.root,
                slurmctld_pid=self.pid_files["slurmctld"],
                slurmd_pid=self.pid_files["slurmd"],
                node=self.node,
                cpus=self.cpus,
                memory_mb=self.memory_mb,
                partition=self.partition,
            )
        )

    def start_munge(self) -> None:
        """munged as the munge user, with its own key, socket, pid and log files."""
        munge = pwd.getpwnam("munge")
        self.munge_dir.mkdir()
        self.munge_dir.chmod(0o711)  # munged insists that every client can reach its socket
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for path in (self.munge_dir, key):
            os.chown(path, munge.pw_uid, munge.pw_gid)
        self.launch(
            "munged",
            f"--socket={self.socket}",
            f"--key-file={key}",
            f"--pid-file={self.pid_files['munged']}",
            f"--log-file={self.munge_dir / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
            user=munge.pw_uid,
            group=munge.pw_gid,
            extra_groups=[],
        )

    def launch(self, daemon: str, *args: str, **options) -> None:
        """Run a daemon, which forks and writes its pid file; raises with its output and the logs if it fails."""
        result = subprocess.run(
            [find_command(daemon), *args],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **self.env},
            **options,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{daemon} failed to start ({result.returncode}): {result.stderr}\n{self.logs()}")

    def start(self, timeout: float = 90) -> None:
        """Start the three daemons and wait until the node is idle; raises with the logs if it never is."""
        self.write_config()
        self.write_srun_shim()
        self.start_munge()
        self.launch("slurmctld", "-f", str(self.conf))
        self.launch("slurmd", "-f", str(self.conf), "-N", self.node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.node_state() == "idle":
                return
            time.sleep(1)
        raise RuntimeError(
            f"node {self.node} not idle after {timeout:.0f} s (state {self.node_state()!r})\n" + self.logs()
        )

    def node_state(self) -> str:
        result = self.command("sinfo", "--noheader", "--nodes", self.node, "--format", "%T")
        return result.stdout.strip()

    def command(self, name: str, *args: str) -> subprocess.CompletedProcess:
        """A SLURM client command run against this cluster."""
        return subprocess.run(
            [find_command(name), *args], capture_output=True, text=True, env={**os.environ, **self.env}, timeout=60
        )

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as a dict (kept by slurmctld for MinJobAge after the job ends)."""
        result = self.command("scontrol", "--oneliner", "show", "job", job_id)
        return dict(field.split("=", 1) for field in result.stdout.split() if "=" in field)

    def logs(self) -> str:
        paths = [self.root / "slurmctld.log", self.root / "slurmd.log", self.munge_dir / "munged.log"]
        return "\n".join(f"--- {path}\n{path.read_text()[-3000:]}" for path in paths if path.is_file())

    def pid(self, daemon: str) -> int | None:
        path = self.pid_files[daemon]
        return int(path.read_text().split()[0]) if path.is_file() else None

    def running(self, daemon: str) -> bool:
        pid = self.pid(daemon)
        return pid is not None and alive(pid)

    def stop(self, grace: float = 15) -> None:
        """Cancel leftover jobs, then stop each daemon this object started, by the pid in its pid file."""
        if self.running("slurmctld"):
            self.command("scancel", "--partition", self.partition)
        for daemon in reversed(DAEMONS):
            if not self.running(daemon):
                continue
            pid = self.pid(daemon)
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + grace
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
