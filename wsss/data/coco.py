"""MS-COCO 2014 converted into the pipeline's VOC layout, so every later step reads COCO exactly as it reads VOC.

Input: `<coco_root>/train2014/`, `val2014/`, `annotations/instances_{train,val}2014.json` (the official
download). Output, under `out_dir`, written atomically (a failed run leaves an earlier output untouched):
  JPEGImages/<id>.jpg           symlinks to the original images (no copy of 20 GB)
  Annotations/<id>.xml          minimal VOC XML, one <object><name> per image-level label
  SegmentationClass/<id>.png    class maps, 0 = background, 1..80 = COCO_CLASSES, VOC palette
  ImageSets/Segmentation/{train,val}.txt   sorted ids; ids are the COCO file stems (COCO_train2014_000000000009)
  categories.json               COCO category id -> label index and name

Choices, and where they come from (facts read in public WSSS code; nothing copied):
- Class maps follow `cocoSegmentationToSegmentationMap` of the COCO-Stuff API (nightrome/cocostuffapi, default
  includeCrowd=False), the rule the public WSSS COCO ground-truth scripts reuse (ReCAM's mscoco/annToMask.py):
  only non-crowd instances are painted, in the order of their annotations in the JSON, so where instances
  overlap the later annotation wins; crowd regions (iscrowd=1) are not painted and stay background unless a
  non-crowd instance covers them. The `coco_seg_anno` maps that CLIP-ES and RIB link to come without a
  script, so this published rule is the one to match. Nothing is marked 255 (ignore).
- Image-level labels follow the same choice: the classes of the non-crowd annotations. A class present only as
  a crowd region is no label, since its pixels are background in the class map and a label would contradict it.
- Splits: train = train2014 images with at least one label, val = val2014 images with at least one label:
  82,081 of 82,783 and 40,137 of 40,504 images with the official JSONs (unless some image holds crowd regions
  only), the counts of the lists CLIP-ES publishes (coco14/train.txt, coco14/val.txt) and most recent COCO WSSS
  results use (MCTformer's lists keep all images). Weak supervision needs a label, and an unlabelled val image's
  map is all background, so it would only add background pixels to the score.
- A polygon of fewer than 3 points encloses nothing and is skipped (pycocotools would read 4 numbers as a box).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from wsss.core.errors import DataError
from wsss.core.files import atomic_dir
from wsss.data.io import image_size, write_mask
from wsss.data.voc import parallel_map, problems_error

# The 80 categories in COCO's order (ascending category id); label k (1..80) is COCO_CLASSES[k - 1].
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
# COCO's category ids of those classes: 1..90, with the ids of categories dropped before release left out.
COCO_CATEGORY_IDS: tuple[int, ...] = tuple(i for i in range(1, 91) if i not in {12, 26, 29, 30, 45, 66, 68, 69, 71, 83})
LABEL_OF_CATEGORY = {coco_id: label for label, coco_id in enumerate(COCO_CATEGORY_IDS, start=1)}
NUM_COCO_CLASSES = len(COCO_CLASSES) + 1  # 81, background included

SPLIT_FOLDERS = {"train": "train2014", "val": "val2014"}  # output split -> COCO folder
CATEGORIES_FILE = "categories.json"
OUTPUT_FOLDERS = ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Segmentation")


@dataclass(frozen=True)
class _Image:
    """One image to convert, with all a worker needs (it is pickled to the worker)."""

    image_id: str
    source: Path
    json_path: Path
    height: int
    width: int
    instances: tuple[tuple[int, list | dict], ...]  # (label, segmentation) of non-crowd annotations, JSON order

    @property
    def labels(self) -> tuple[int, ...]:
        return tuple(sorted({label for label, _ in self.instances}))


def convert_coco(
    coco_root: str | os.PathLike, out_dir: str | os.PathLike, *, workers: int = 1, progress: bool = True
) -> dict:
    """Write the VOC-layout copy of COCO 2014 under `out_dir` and return a report (split names and counts).

    Every problem that reading the JSONs reveals is raised at once, before anything is written; problems found
    while converting (unreadable images, sizes that disagree with the JSON) are raised at the end, before the
    new output replaces an old one.
    """
    coco_root = Path(coco_root).absolute()  # the symlinks must reach the originals from wherever they are read
    out_dir = Path(out_dir)
    _check_inputs(coco_root)
    images: dict[str, list[_Image]] = {}
    without_labels: dict[str, int] = {}
    problems: list[str] = []
    for split, folder in SPLIT_FOLDERS.items():
        try:
            images[split], without_labels[split], found = _read_split(coco_root, folder)
        except DataError as exc:
            found = [str(exc)]
        problems += found
    _raise_problems(problems)

    with atomic_dir(out_dir) as tmp:
        for folder in OUTPUT_FOLDERS:
            (tmp / folder).mkdir(parents=True)
        convert = partial(_write_image, tmp)
        for split, split_images in images.items():
            problems += [p for p in parallel_map(convert, split_images, workers, progress, f"COCO {split}") if p]
        _raise_problems(problems)
        for split, split_images in images.items():
            ids = "".join(f"{image.image_id}\n" for image in split_images)
            (tmp / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(ids)
        (tmp / CATEGORIES_FILE).write_text(json.dumps(_category_mapping(), indent=2) + "\n")

    for split, folder in SPLIT_FOLDERS.items():
        print(
            f"COCO {folder}: {len(images[split])} labelled images -> split '{split}'; "
            f"{without_labels[split]} without labels left out"
        )
    return {
        "coco_root": str(coco_root),
        "out_dir": str(out_dir),
        "splits": {"train": "train", "eval": "val"},
        "counts": {split: len(split_images) for split, split_images in images.items()},
        "without_labels": without_labels,
        "num_classes": NUM_COCO_CLASSES,
    }


def _check_inputs(coco_root: Path) -> None:
    """All missing folders and JSON files in one error, before the (slow) JSON parsing."""
    if not coco_root.is_dir():
        raise DataError(f"{coco_root}: directory not found. Point the COCO root at the folder holding train2014/.")
    folders = [coco_root / folder for folder in (*SPLIT_FOLDERS.values(), "annotations")]
    jsons = [_json_path(coco_root, folder) for folder in SPLIT_FOLDERS.values()]
    missing = [path for path in folders if not path.is_dir()] + [path for path in jsons if not path.is_file()]
    _raise_problems(
        [
            f"{path}: not found. Unzip train2014.zip, val2014.zip and annotations_trainval2014.zip into the COCO root."
            for path in missing
        ]
    )


def _json_path(coco_root: Path, folder: str) -> Path:
    return coco_root / "annotations" / f"instances_{folder}.json"


def _read_split(coco_root: Path, folder: str) -> tuple[list[_Image], int, list[str]]:
    """The labelled images of one COCO folder (sorted by id), how many had no label, and the problems found.

    Only labelled images must exist on disk: the others are never read.
    """
    json_path = _json_path(coco_root, folder)
    data = _load_json(json_path)
    _check_categories(json_path, data["categories"])
    problems: list[str] = []
    entries = {}
    for entry in data["images"]:
        problem = _image_entry_problem(entry) or (entry["id"] in entries and f"id {entry['id']} is listed twice")
        if problem:
            problems.append(f"{json_path}: image entry {str(entry)[:80]}: {problem}")
        else:
            entries[entry["id"]] = entry
    instances: dict[int, list] = {image_id: [] for image_id in entries}
    for annotation in data["annotations"]:
        problem = _annotation_problem(annotation, entries)
        if problem:
            number = annotation.get("id") if isinstance(annotation, dict) else None
            problems.append(f"{json_path}: annotation {number}: {problem}")
        elif not annotation.get("iscrowd", 0):
            instances[annotation["image_id"]].append(
                (LABEL_OF_CATEGORY[annotation["category_id"]], annotation["segmentation"])
            )
    images = sorted(
        (
            _Image(
                Path(entry["file_name"]).stem,
                coco_root / folder / entry["file_name"],
                json_path,
                entry["height"],
                entry["width"],
                tuple(instances[image_id]),
            )
            for image_id, entry in entries.items()
            if instances[image_id]
        ),
        key=lambda image: image.image_id,
    )
    problems += [
        f"{image.source}: image missing, though {json_path} lists it. Re-extract {folder}.zip."
        for image in images
        if not image.source.is_file()
    ]
    return images, len(entries) - len(images), problems


def _load_json(json_path: Path) -> dict:
    """The parsed JSON, which must hold the three lists of a COCO instances file."""
    try:
        with json_path.open("rb") as handle:
            data = json.load(handle)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(f"{json_path}: malformed JSON ({exc}). Re-extract annotations_trainval2014.zip.") from None
    missing = [
        key
        for key in ("images", "annotations", "categories")
        if not isinstance(data, dict) or not isinstance(data.get(key), list)
    ]
    if missing:
        raise DataError(
            f"{json_path}: no {', '.join(repr(key) for key in missing)} list, so not a COCO instances file. "
            "Use the instances_*2014.json of annotations_trainval2014.zip."
        )
    return data


def _check_categories(json_path: Path, categories: list) -> None:
    """The JSON must hold exactly COCO's 80 categories, so the label of every category id is the published one."""
    found = [(entry.get("id"), entry.get("name")) if isinstance(entry, dict) else entry for entry in categories]
    expected = list(zip(COCO_CATEGORY_IDS, COCO_CLASSES, strict=True))
    missing = [pair for pair in expected if pair not in found]
    unexpected = [pair for pair in found if pair not in expected]
    if missing or unexpected or len(found) != len(expected):
        raise DataError(
            f"{json_path}: its categories are not COCO 2014's 80 (missing (id, name): {missing[:5]}, unexpected: "
            f"{unexpected[:5]}, {len(found)} in all). Use the instances_*2014.json of annotations_trainval2014.zip."
        )


def _image_entry_problem(entry) -> str | None:
    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str) or "id" not in entry:
        return "needs 'id' and 'file_name'"
    if not all(isinstance(entry.get(key), int) and entry[key] > 0 for key in ("height", "width")):
        return "needs positive integer 'height' and 'width'"
    return None


def _annotation_problem(annotation, entries: dict) -> str | None:
    """What is wrong with an annotation, checked cheaply (no decoding), or None."""
    if not isinstance(annotation, dict):
        return "not an object"
    if annotation.get("category_id") not in LABEL_OF_CATEGORY:
        return f"unknown category id {annotation.get('category_id')!r}; COCO 2014's 80 categories have ids 1..90"
    entry = entries.get(annotation.get("image_id"))
    if entry is None:
        return f"image id {annotation.get('image_id')!r} is not in 'images'"
    if annotation.get("iscrowd", 0):
        return None  # never painted
    return _segmentation_problem(annotation.get("segmentation"), entry["height"], entry["width"])


def _segmentation_problem(segmentation, height: int, width: int) -> str | None:
    if isinstance(segmentation, list):
        if all(isinstance(polygon, list) and len(polygon) % 2 == 0 for polygon in segmentation):
            return None
        return "'segmentation' polygons must be lists of x, y pairs"
    if not isinstance(segmentation, dict) or not isinstance(segmentation.get("counts"), list | str):
        return "'segmentation' must be polygons or an RLE with 'counts' and 'size'"
    if list(segmentation.get("size", [])) != [height, width]:
        return f"RLE size {segmentation.get('size')} is not the image's [height, width] [{height}, {width}]"
    counts = segmentation["counts"]
    if isinstance(counts, list) and (sum(counts) != height * width or min(counts, default=0) < 0):
        return f"uncompressed RLE counts sum to {sum(counts)}, not height x width = {height * width}"
    return None


def _write_image(out_root: Path, image: _Image) -> str | None:
    """Symlink, XML and class map of one image; a problem message, or None once written."""
    try:
        size = image_size(image.source)
    except DataError as exc:
        return str(exc)
    if size != (image.height, image.width):
        return (
            f"{image.source}: image is {size[1]}x{size[0]} (WxH) but {image.json_path} says "
            f"{image.width}x{image.height}. Re-download the image or the annotations."
        )
    try:
        class_map = _class_map(image)
    except (TypeError, ValueError) as exc:
        return (
            f"{image.json_path}: a segmentation of '{image.image_id}' cannot be decoded ({exc}). Re-extract the JSON."
        )
    (out_root / "JPEGImages" / f"{image.image_id}.jpg").symlink_to(image.source)
    (out_root / "Annotations" / f"{image.image_id}.xml").write_text(_annotation_xml(image))
    write_mask(out_root / "SegmentationClass" / f"{image.image_id}.png", class_map, atomic=False)
    return None


def _class_map(image: _Image) -> np.ndarray:
    """Labels painted instance by instance in JSON order, so the later annotation wins where instances overlap."""
    class_map = np.zeros((image.height, image.width), dtype=np.uint8)
    for label, segmentation in image.instances:
        class_map[_instance_mask(segmentation, image.height, image.width)] = label
    return class_map


def _instance_mask(segmentation: list | dict, height: int, width: int) -> np.ndarray:
    """H x W bool mask of polygons, an uncompressed RLE (counts list) or a compressed RLE (counts string)."""
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:
            return np.zeros((height, width), dtype=bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def _annotation_xml(image: _Image) -> str:
    """Minimal VOC XML: file name, size and one non-difficult object per image-level label."""
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = image.source.name
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(image.width)
    ET.SubElement(size, "height").text = str(image.height)
    for label in image.labels:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = COCO_CLASSES[label - 1]
        ET.SubElement(obj, "difficult").text = "0"
    return ET.tostring(root, encoding="unicode") + "\n"


def _category_mapping() -> dict:
    return {
        "background": 0,
        "categories": {
            str(coco_id): {"index": label, "name": COCO_CLASSES[label - 1]}
            for coco_id, label in LABEL_OF_CATEGORY.items()
        },
    }


def _raise_problems(problems: list[str]) -> None:
    if problems:
        raise problems_error("the COCO dataset", problems)
