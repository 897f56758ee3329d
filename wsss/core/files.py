"""Atomic file and directory writes, so an interrupted job never leaves a file that looks complete."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give under the current umask (mkstemp's 0600 is too private)."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _temporary_prefix(parent: Path, name: str, suffix: str) -> str:
    """`.<name>.<pid>.`, for a new temporary next to an output; first deletes the temporaries of the same
    output whose writer process is gone (a SIGKILL skips every cleanup), so reruns leave no debris.

    Only dead writers' leftovers go: a live process's temporary, on this host or (pid unknown here)
    another one sharing the folder, is never touched.
    """
    for leftover in parent.glob(f".{glob.escape(name)}.*{glob.escape(suffix)}"):
        pid = leftover.name[len(name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    return f".{name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    The temporary file keeps `path`'s suffix so writers that infer the format from it work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = f".tmp{path.suffix}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temporary_prefix(path.parent, path.stem, suffix), suffix=suffix)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_torch(obj, path: str | os.PathLike) -> None:
    """`torch.save(obj)` to `path`, atomically, byte for byte the same file for the same object.

    Given a path, torch names the zip's records after it (`.<name>.<pid>.<random>.tmp/data.pkl` for
    atomic_path's temporary file), so two runs' identical weights differ in bytes; through an open file
    they are `archive/...` whatever the path.
    """
    import torch  # here, not at the top: the jobs that never write tensors start without importing torch

    with atomic_path(path) as tmp, open(tmp, "wb") as file:
        torch.save(obj, file)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory next to `path`; it replaces `path` only if the block succeeds.

    An existing `path` is left untouched when the block fails.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(dir=path.parent, prefix=_temporary_prefix(path.parent, path.name, ".tmp"), suffix=".tmp")
    )
    try:
        yield tmp
        os.chmod(tmp, _default_mode(directory=True))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write table rows atomically as CSV, floats to 4 decimals: the one format of every results table."""
    import pandas as pd  # imported here: most users of this module never write tables

    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False, float_format="%.4f")
