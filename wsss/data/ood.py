"""Hard out-of-distribution images for W-OoD (Lee et al., CVPR 2022), in W-OoD's layout, checked up front.

A hard OoD image holds none of the classes but their spurious context (water without a boat); training the
classifier to output no class on such images keeps its CAMs off that context. Layout (W-OoD's `--ood_root` and
`ood_list.txt`):
  <ood_root>/<list>      one image path per line, relative to ood_root; no labels (an OoD image has none)
  <ood_root>/<path>      each listed image: any format PIL decodes, grey and CMYK JPEGs included (read as RGB)
The list's order is kept: W-OoD seeds its k-means of the OoD features with the first images.

The dataset check (`validate_ood`, through `icd validate-data`) decodes every listed image, so a bad file stops
the run before any training, and records the list in dataset.json (`ood`); the trainer reads it back with
`OoDImages.of_dataset`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsss.data.image_lists import ListedPaths, read_list_lines
from wsss.data.io import read_rgb
from wsss.data.voc import decode_image, parallel_map, problems_error

DEFAULT_LIST = "ood_list.txt"  # W-OoD's name, which the synthetic generator writes too
# How to go without OoD images, the way out every list-level problem offers.
_WITHOUT = "or set data.ood_root to null to train without OoD images"


@dataclass(frozen=True)
class OoDList:
    """An OoD set as the config names it: its root folder and its list file, relative to the root."""

    root: Path
    list_name: str = DEFAULT_LIST

    @property
    def list_file(self) -> Path:
        return self.root / self.list_name


def read_ood_list(ood: OoDList) -> tuple[list[tuple[int, str]], list[str]]:
    """The list's (line number, image path) pairs in list order, and the problems of the list itself: missing, not
    text, empty, a path escaping the root, a path listed twice (wsss.data.image_lists)."""
    list_file = ood.list_file
    if not ood.root.is_dir():
        return [], [f"{ood.root}: OoD folder not found. Set data.ood_root to the folder of OoD images, {_WITHOUT}."]
    lines, problem = read_list_lines(
        list_file,
        missing=f"OoD list not found. Write one image path per line, relative to {ood.root}, or set data.ood_list "
        f"to the list's path relative to data.ood_root, {_WITHOUT}.",
        unreadable=f"Point data.ood_list at the list, {_WITHOUT}.",
    )
    if problem:
        return [], [problem]
    listed = ListedPaths(list_file, ood.root, folder="OoD folder", root_key="data.ood_root")
    entries: list[tuple[int, str]] = []
    problems: list[str] = []
    for number, relative in lines:
        problem = listed.problem(number, relative)
        if problem:
            problems.append(problem)
        else:
            entries.append((number, relative))
    if not entries and not problems:
        problems.append(f"{list_file}: the OoD list names no image. Write one image path per line, {_WITHOUT}.")
    return entries, problems


def validate_ood(ood: OoDList, *, workers: int = 1, progress: bool = True) -> dict:
    """Check the list and decode every listed image fully, before any work; raise one DataError listing every
    problem (each naming its file and the fix). Returns dataset.json's `ood` entry: the root (absolute), the list
    (relative to the root) and the images' paths relative to the root, in list order."""
    entries, problems = read_ood_list(ood)
    present = []
    for number, relative in entries:
        if (ood.root / relative).is_file():
            present.append(ood.root / relative)
        else:
            problems.append(
                f"{ood.root / relative}: OoD image missing ({ood.list_file}:{number}). Add the image or remove its "
                "line from the list."
            )
    decoded = parallel_map(decode_image, present, workers, progress, "decode OoD images")
    problems += [problem for problem, _ in decoded if problem]
    if problems:
        raise problems_error(f"the OoD set ({ood.list_file})", problems)
    return {"root": str(ood.root.absolute()), "list": ood.list_name, "images": [relative for _, relative in entries]}


@dataclass(frozen=True)
class OoDImages:
    """The OoD images a checked dataset report lists, as the trainer reads them: by index, in list order, as RGB."""

    root: Path
    images: tuple[str, ...]

    @classmethod
    def of_dataset(cls, dataset: dict) -> OoDImages | None:
        """The report's OoD set, or None when the run has none (a report without `ood`, or with `ood: null`)."""
        entry = dataset.get("ood")
        return cls(Path(entry["root"]), tuple(entry["images"])) if entry else None

    def __len__(self) -> int:
        return len(self.images)

    def path(self, index: int) -> Path:
        return self.root / self.images[index]

    def read(self, index: int) -> np.ndarray:
        """Image `index` as H x W x 3 uint8 RGB (grey and CMYK converted), as the dataset's images are read."""
        return read_rgb(self.path(index))
