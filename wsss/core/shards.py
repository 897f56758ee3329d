"""Per-image arrays stored as compressed npz shards: one file per shard, one member per image id.

Per-image work (superpixels, scores) runs as a fixed number of shards rather than one job per
image, so a VOC-scale DAG stays small; readers look ids up across shards lazily.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from wsss.core.errors import DataError
from wsss.core.files import atomic_path


def shard_ids(ids: Sequence[str], index: int, count: int) -> list[str]:
    """The ids of shard `index` of `count`: contiguous, near-equal blocks in list order."""
    if not 0 <= index < count:
        raise ValueError(f"shard index {index} outside 0..{count - 1}")
    bounds = np.linspace(0, len(ids), count + 1).round().astype(int)
    return list(ids[bounds[index] : bounds[index + 1]])


# np.savez_compressed stamps every member with the time of writing; a fixed stamp makes a shard's bytes a
# function of its arrays, so identical results rewritten by a rerun keep their content digest.
MEMBER_DATE = (1980, 1, 1, 0, 0, 0)


def save_shard(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write {id: array} as one compressed npz (np.load reads it as savez_compressed's), atomically."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=MEMBER_DATE)
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


class ShardStore:
    """Read-only {id: array} view over several npz shards; each shard opens lazily, once per process."""

    def __init__(self, paths: Iterable[str | os.PathLike]) -> None:
        self._where: dict[str, Path] = {}
        for path in map(Path, paths):
            try:
                with zipfile.ZipFile(path) as archive:
                    names = [name[:-4] for name in archive.namelist() if name.endswith(".npy")]
            except (OSError, zipfile.BadZipFile) as exc:
                raise DataError(
                    f"{path}: unreadable shard ({exc}). Delete it and rerun the step that writes it."
                ) from None
            self._where.update(dict.fromkeys(names, path))
        self._open: dict[Path, np.lib.npyio.NpzFile] = {}
        self._pid = os.getpid()

    def __contains__(self, image_id: str) -> bool:
        return image_id in self._where

    def __len__(self) -> int:
        return len(self._where)

    def ids(self) -> list[str]:
        return sorted(self._where)

    def __getitem__(self, image_id: str) -> np.ndarray:
        if image_id not in self._where:
            shards = sorted({str(path) for path in self._where.values()})[:3]
            raise DataError(
                f"no entry for image '{image_id}' in the shards ({shards}...). "
                "The shards were made for another image list: rerun the step that writes them."
            )
        if os.getpid() != self._pid:  # a forked data-loader worker must not share zip handles
            self._open, self._pid = {}, os.getpid()
        path = self._where[image_id]
        if path not in self._open:
            self._open[path] = np.load(path)
        return self._open[path][image_id]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_open": {}}
