"""Installing a Debian package a test needs (Chromium for the report, SLURM for the cluster test)."""

from __future__ import annotations

import os
import shutil
import subprocess

# Tests run in parallel may install packages at the same time: wait for the other's dpkg lock.
_WAIT_FOR_LOCK = ("-o", "DPkg::Lock::Timeout=300")


class AptUnavailable(RuntimeError):
    """Packages cannot be installed here: not root, or no apt-get."""


def apt_install(
    packages: list[str] | tuple[str, ...], *, recommends: bool = True, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`apt-get install` the packages; returns the last attempt (check returncode).

    A fresh container has no package lists, so a failed install updates them and tries once more.
    """
    if os.geteuid() != 0:
        raise AptUnavailable(f"installing {' '.join(packages)} needs root")
    if shutil.which("apt-get") is None:
        raise AptUnavailable(f"there is no apt-get to install {' '.join(packages)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [
        "apt-get",
        *_WAIT_FOR_LOCK,
        "install",
        "-y",
        "-q",
        *([] if recommends else ["--no-install-recommends"]),
        *packages,
    ]
    result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        subprocess.run(["apt-get", *_WAIT_FOR_LOCK, "update", "-q"], capture_output=True, env=env, timeout=timeout)
        result = subprocess.run(install, capture_output=True, text=True, env=env, timeout=timeout)
    return result
