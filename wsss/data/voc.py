"""Reader and up-front validator for the PASCAL VOC 2012 layout plus SBD's SegmentationClassAug.

Layout (the real dataset and the synthetic one alike):
  <voc_root>/JPEGImages/<id>.jpg, Annotations/<id>.xml, SegmentationClass/<id>.png,
  <voc_root>/ImageSets/Segmentation/{train,val,trainval,test}.txt
  <sbd_root>/SegmentationClassAug/<id>.png, <sbd_root>/ImageSets/SegmentationAug/train_aug.txt
  <saliency_root>/<id>.png (optional grey maps)
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from wsss.core.errors import DataError
from wsss.data.canvas import canvas_problems
from wsss.data.classes import ClassList
from wsss.data.io import image_size, read_mask, read_rgb

AUG_SPLITS = frozenset({"train_aug"})
MAX_LISTED_PROBLEMS = 20


@dataclass(frozen=True)
class VOCPaths:
    """Where every file of the dataset lives; the one place that knows the layout."""

    voc_root: Path
    sbd_root: Path
    saliency_root: Path | None = None

    @classmethod
    def create(cls, voc_root, sbd_root=None, saliency_root=None) -> VOCPaths:
        voc_root = Path(voc_root)
        return cls(voc_root, Path(sbd_root) if sbd_root else voc_root, Path(saliency_root) if saliency_root else None)

    def list_file(self, split: str) -> Path:
        if split in AUG_SPLITS:
            return self.sbd_root / "ImageSets" / "SegmentationAug" / f"{split}.txt"
        return self.voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def image(self, image_id: str) -> Path:
        return self.voc_root / "JPEGImages" / f"{image_id}.jpg"

    def annotation(self, image_id: str) -> Path:
        return self.voc_root / "Annotations" / f"{image_id}.xml"

    def ground_truth(self, split: str, image_id: str) -> Path:
        """SBD's augmented masks for the augmented split, VOC's own masks otherwise."""
        if split in AUG_SPLITS:
            return self.sbd_root / "SegmentationClassAug" / f"{image_id}.png"
        return self.voc_root / "SegmentationClass" / f"{image_id}.png"

    def saliency(self, image_id: str) -> Path:
        if self.saliency_root is None:
            raise DataError("no saliency root is configured: set data.saliency_root to a folder of <id>.png maps.")
        return self.saliency_root / f"{image_id}.png"


def read_split(paths: VOCPaths, split: str) -> list[str]:
    """Ids of a split list, in file order.

    Accepts plain id lists and DeepLab-style lists of `/JPEGImages/<id>.jpg /Segmentation.../<id>.png` lines.
    """
    list_file = paths.list_file(split)
    if not list_file.is_file():
        raise DataError(
            f"{list_file}: split list '{split}' not found. Check data.voc_root / data.sbd_root point at the "
            f"folder holding ImageSets/ (for train_aug: SBD's ImageSets/SegmentationAug/train_aug.txt)."
        )
    ids: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        image_id = Path(line.split()[0]).stem
        if image_id in seen:
            raise DataError(f"{list_file}:{number}: id '{image_id}' is listed twice. Remove the duplicate line.")
        seen.add(image_id)
        ids.append(image_id)
    if not ids:
        raise DataError(f"{list_file}: split list '{split}' is empty. Regenerate or re-download it.")
    return ids


def parse_annotation(xml_path: str | os.PathLike, classes: ClassList) -> tuple[int, ...]:
    """Foreground class indices (1..K of `classes`, sorted, unique) of a VOC XML annotation.

    Objects marked difficult are dropped unless every object of the image is difficult (the official
    rule), so an image never loses all its labels to the difficult flag.
    """
    xml_path = Path(xml_path)
    try:
        root = ET.parse(xml_path).getroot()
    except FileNotFoundError:
        raise DataError(f"{xml_path}: annotation not found. Check data.voc_root and the split list.") from None
    except ET.ParseError as exc:
        raise DataError(f"{xml_path}: malformed XML ({exc}). Re-extract the Annotations folder.") from None
    objects = []
    for obj in root.iter("object"):
        name = (obj.findtext("name") or "").strip()
        try:
            index = classes.index(name)
        except KeyError:
            raise DataError(
                f"{xml_path}: unknown class name '{name}'. Object names must be one of the "
                f"{classes.num_foreground} classes of data.classes: {', '.join(classes.foreground)}."
            ) from None
        objects.append((index, (obj.findtext("difficult") or "0").strip() == "1"))
    kept = [index for index, difficult in objects if not difficult] or [index for index, _ in objects]
    return tuple(sorted(set(kept)))


def annotation_labels(
    xml_path: Path, classes: ClassList, *, missing: str, empty: str
) -> tuple[tuple[int, ...], str | None]:
    """An image's weak labels from its annotation (`parse_annotation`), or none and the problem for the dataset
    check: the XML missing (`missing`: what to write after its name), malformed, naming an unknown class, or holding
    no object (`empty`: the fix), since weak supervision needs at least one class per training image."""
    if not xml_path.is_file():
        return (), f"{xml_path}: {missing}"
    try:
        labels = parse_annotation(xml_path, classes)
    except DataError as exc:
        return (), str(exc)
    if not labels:
        return (), (
            f"{xml_path}: no object, so the image has an empty label set; weak supervision needs at least one class. "
            f"{empty}"
        )
    return labels, None


@dataclass(frozen=True)
class SplitRoles:
    """Which split plays which part: weak training labels, evaluation with GT, server test (None: a dataset with
    no test split, COCO's; the report's roles then say test: null and its splits hold none)."""

    train: str = "train_aug"
    eval: str = "val"
    test: str | None = "test"


def decode_image(path: Path) -> tuple[str | None, int]:
    """Decode an image fully (catching truncation): (a problem message or None, its longer side in pixels). The
    dataset's images and the OoD set's (wsss.data.ood) are checked with it."""
    try:
        return None, max(read_rgb(path).shape[:2])
    except DataError as exc:
        return str(exc), 0


def _check_same_size(image_path: Path, other: Path, what: str, fix: str) -> str | None:
    try:
        expected = image_size(image_path)
        found = image_size(other)
    except DataError as exc:
        return str(exc)
    if expected != found:
        return f"{other}: {what} is {found[1]}x{found[0]} (WxH) but its image is {expected[1]}x{expected[0]}. {fix}"
    return None


def _check_mask(image_path: Path, mask_path: Path, num_classes: int) -> str | None:
    if not mask_path.is_file():
        return f"{mask_path}: ground-truth mask missing. Add it or remove the id from the split list."
    problem = _check_same_size(image_path, mask_path, "mask", "Masks must have their image's size.")
    if problem:
        return problem
    try:
        read_mask(mask_path, num_classes)
    except DataError as exc:
        return str(exc)
    return None


def validate_dataset(
    paths: VOCPaths,
    roles: SplitRoles = SplitRoles(),
    *,
    classes: ClassList,
    canvases: dict[str, int] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Check everything the pipeline will read, before any work; raise one DataError listing the problems.

    Returns a report: the class list, split ids, image-level labels of the training split, counts and the longest
    image side (`largest_side`, from which wsss.data.canvas derives the inference canvases). Images are decoded
    fully so a truncated JPEG is caught here rather than hours into training. `canvases`: the canvas sizes the
    config sets ({setting key: pixels}), each of which must hold the largest image.
    """
    for directory, what in [
        (paths.voc_root, "data.voc_root (the VOC2012 folder)"),
        (paths.voc_root / "JPEGImages", "JPEGImages/ under data.voc_root"),
        (paths.voc_root / "Annotations", "Annotations/ under data.voc_root"),
        (paths.sbd_root, "data.sbd_root (holding SegmentationClassAug/)"),
    ] + ([(paths.saliency_root, "data.saliency_root")] if paths.saliency_root else []):
        if not directory.is_dir():
            raise DataError(f"{directory}: directory not found. Set {what} to an existing folder.")

    splits = {role: read_split(paths, split) for role, split in vars(roles).items() if split is not None}
    problems: list[str] = []
    labels: dict[str, list[int]] = {}
    for image_id in splits["train"]:
        found, problem = annotation_labels(
            paths.annotation(image_id),
            classes,
            missing=f"annotation missing for id '{image_id}' of '{roles.train}'. Add the XML or remove the id from "
            "the split list.",
            empty=f"Remove '{image_id}' from '{roles.train}'.",
        )
        if problem:
            problems.append(problem)
        else:
            labels[image_id] = list(found)

    all_ids = sorted(set().union(*splits.values()))
    missing = [paths.image(i) for i in all_ids if not paths.image(i).is_file()]
    problems += [
        f"{p}: image missing for id '{p.stem}'. Add the JPEG or remove the id from its split list." for p in missing
    ]
    to_decode = [paths.image(i) for i in all_ids if paths.image(i).is_file()]
    decoded = parallel_map(decode_image, to_decode, workers, progress, "decode images")
    problems += [problem for problem, _ in decoded if problem]
    sides = [side for _, side in decoded]
    largest_side = max(sides, default=0)
    problems += canvas_problems(to_decode, sides, canvases or {})

    for role in ("train", "eval"):
        split = getattr(roles, role)
        for image_id in splits[role]:
            if paths.image(image_id).is_file():
                problem = _check_mask(paths.image(image_id), paths.ground_truth(split, image_id), classes.num_classes)
                if problem:
                    problems.append(problem)
    if paths.saliency_root is not None:
        for image_id in splits["train"]:
            saliency = paths.saliency(image_id)
            if not saliency.is_file():
                problems.append(f"{saliency}: saliency map missing. Add it or unset data.saliency_root.")
            elif paths.image(image_id).is_file():
                problem = _check_same_size(
                    paths.image(image_id), saliency, "saliency map", "Resize the saliency maps to their images' sizes."
                )
                if problem:
                    problems.append(problem)

    if problems:
        raise problems_error("the dataset", problems)
    return {
        "voc_root": str(paths.voc_root),
        "sbd_root": str(paths.sbd_root),
        "saliency_root": str(paths.saliency_root) if paths.saliency_root else None,
        "classes": list(classes.foreground),
        "splits": {getattr(roles, role): ids for role, ids in splits.items()},
        "roles": vars(roles),
        "labels": labels,
        "counts": {getattr(roles, role): len(ids) for role, ids in splits.items()},
        "largest_side": largest_side,
    }


def problems_error(subject: str, problems: Sequence[str]) -> DataError:
    """One error listing the problems found in `subject` (the first MAX_LISTED_PROBLEMS, then how many more), so
    that one run tells the user everything to fix."""
    shown = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
    more = f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
    return DataError(f"{subject} has {len(problems)} problem(s):\n  {shown}{more}")


def parallel_map(function, items: Sequence, workers: int, progress: bool, description: str) -> Iterable:
    """Map over items, in worker processes when workers > 1, with a progress bar."""
    bar = dict(total=len(items), desc=description, disable=not progress, mininterval=2.0)
    if workers <= 1 or len(items) < 64:
        return [function(item) for item in tqdm(items, **bar)]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(function, items, chunksize=32), **bar))
