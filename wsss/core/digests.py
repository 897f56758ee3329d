"""Content digests of a training run's inputs, so a checkpoint is only ever resumed on the same bytes.

A trainer resumes from its `checkpoint.pt` after a kill. Snakemake also reruns a trainer when an
input file is newer (new seeds after a threshold change, new superpixels, a replaced weights file),
and the options fingerprint cannot see that: the same config over other inputs would resume the old
run and stop at once with the old weights. So each checkpoint also records a digest of every input's
content (the images, label maps, shards and weights the trainer reads), computed by the trainer
itself from the files, so it holds whatever wrote them and however their mtimes move.

SHA-256 over bytes: reading a VOC-scale training split (10,582 JPEGs and as many seed PNGs, about
1.2 GB) takes a few seconds (`python benchmarks/digests.py`), nothing against a training run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wsss.core.errors import DataError
from wsss.data.voc import VOCPaths

# hashlib releases the GIL while it hashes, so a few threads overlap reading and hashing.
READER_THREADS = 4


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 of one file's bytes."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        raise DataError(f"{path}: a training input is missing. Rerun the step that writes it.") from None


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """One digest of several files: their names and bytes, in the order given."""
    paths = [Path(path) for path in paths]
    with ThreadPoolExecutor(READER_THREADS) as pool:
        digests = pool.map(file_digest, paths)
        combined = hashlib.sha256()
        for path, digest in zip(paths, digests, strict=True):
            combined.update(f"{path.name}\0{digest}\n".encode())
    return combined.hexdigest()


def value_digest(value) -> str:
    """SHA-256 of a JSON-serialisable value (ids, labels), independent of dict order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def changed_inputs(recorded: dict | None, current: dict[str, str]) -> list[str]:
    """Names of the inputs whose digest differs from the recorded one (all of them if none was recorded)."""
    recorded = recorded or {}
    return sorted(name for name in set(recorded) | set(current) if recorded.get(name) != current.get(name))


def labelled_images_digests(ids: Sequence[str], labels: Mapping[str, list[int]], image_path) -> dict[str, str]:
    """What a trainer reads of a set of image-level-labelled images: their ids and labels in order, and the bytes of
    their files (`image_path(id)`)."""
    return {
        "ids_and_labels": value_digest({"ids": list(ids), "labels": {i: labels[i] for i in ids}}),
        "images": files_digest(map(image_path, ids)),
    }


def training_inputs(dataset: dict, **others: str) -> dict[str, str]:
    """The digests of a trainer's inputs: what every trainer reads of the dataset (the training split's
    ids and labels, and its images' bytes) and the digests of its `others` inputs, by name."""
    ids = dataset["splits"][dataset["roles"]["train"]]
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    return {**labelled_images_digests(ids, dataset["labels"], paths.image), **others}
