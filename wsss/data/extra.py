"""Extra image-level-labelled training images (`data.extra`), checked up front like the main tree.

Web-crawled images found by class name hold mostly one object on a simple background: more image-level labels for
the ICD networks, which train on them besides the training split. Seeds, their tables and DeepLab use the main
training split only, and evaluation never sees them. One set per entry of data.extra ({root, list}), its layout
recognised from the folder, not configured:
  VOC tree  <root>/Annotations/ and <root>/JPEGImages/: labels from <id>.xml exactly as the main tree's
            (wsss.data.voc.parse_annotation with the dataset's classes), the image <id>.jpg; the ids are `list`'s
            (one id per line, as VOC's split lists) or, without a list, every Annotations/*.xml, sorted.
  list      anything else: `list` (default extra_list.txt), relative to the root, one image per line:
            `<path relative to the root> <class>[,<class>...]`, the names data.classes's (a class name may hold
            spaces, the path may not).
Any image format PIL decodes, grey and CMYK JPEGs included (read as RGB).

The dataset check (`validate_extra`, through `icd validate-data --extra`) decodes every image and stops the run
before any training with every problem at once, each naming its file (and line) and the fix. It records the sets
in dataset.json as `extra` (null when the run has none):
  sets          [{"root": <absolute>, "layout": "voc" | "list", "list": <relative to root, or null>,
                  "images": <count>}], in data.extra's order
  ids           every image's id, set after set, each in its list's order (a VOC tree without a list: its sorted
                annotations'): `extra<k>/<path relative to set k's root, without its suffix>`, so unique across
                sets and never one of the dataset's ids
  paths         {id: image path relative to its set's root}
  set_of        {id: index of its set in `sets`}
  labels        {id: foreground class indices 1..C, sorted}: the convention of dataset.json's `labels`
  largest_side  the longest image side among them, which the dataset's `largest_side` (the derived canvases,
                wsss.data.canvas) counts too; a canvas the config sets must hold them as it holds the dataset's
The trainers read it back with `ExtraImages.of_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsss.data.canvas import canvas_problems
from wsss.data.classes import ClassList
from wsss.data.image_lists import ListedPaths, read_list_lines
from wsss.data.voc import annotation_labels, decode_image, parallel_map, problems_error

DEFAULT_LIST = "extra_list.txt"  # a list layout's list when data.extra names none; the synthetic generator's too
VOC_LAYOUT, LIST_LAYOUT = "voc", "list"


@dataclass(frozen=True)
class ExtraSet:
    """One entry of data.extra: its root folder and its list file relative to the root (None: the layout's default,
    DEFAULT_LIST for a list layout, every annotation for a VOC tree)."""

    root: Path
    list_name: str | None = None

    @classmethod
    def of_config(cls, entry: Mapping) -> ExtraSet:
        """The set an entry of data.extra ({root, list}) names."""
        return cls(Path(entry["root"]), entry.get("list"))

    @property
    def layout(self) -> str:
        """VOC_LAYOUT when the root holds Annotations/ and JPEGImages/, else LIST_LAYOUT."""
        tree = (self.root / "Annotations").is_dir() and (self.root / "JPEGImages").is_dir()
        return VOC_LAYOUT if tree else LIST_LAYOUT

    @property
    def list_relative(self) -> str | None:
        """The list the set is read from, relative to the root; None for a VOC tree read whole."""
        if self.list_name:
            return self.list_name
        return None if self.layout == VOC_LAYOUT else DEFAULT_LIST

    @property
    def list_file(self) -> Path | None:
        return self.root / self.list_relative if self.list_relative else None

    @property
    def index_path(self) -> Path:
        """What changes when images are added or removed: the list, or the Annotations folder of a VOC tree read
        whole. An input of the dataset check, so planning never lists an image folder."""
        return self.list_file or self.root / "Annotations"


@dataclass(frozen=True)
class _Entry:
    """One image of a set as read: its id and path relative to the root, its labels, what names it (file:line, or
    the annotation) and how to drop it."""

    image_id: str
    relative: str
    labels: tuple[int, ...]
    named_at: str
    removal: str


def _image_id(set_index: int, relative: str) -> str:
    return f"extra{set_index}/{os.path.splitext(os.path.normpath(relative))[0]}"


def _without(key: str) -> str:
    """How to go without a set, the way out every set-level problem offers."""
    return f"or remove {key} from data.extra to train without it"


def _read_image_list(extra: ExtraSet, set_index: int, classes: ClassList) -> tuple[list[_Entry], list[str]]:
    """A list layout's entries in list order and the problems of its lines: no class, an unknown class name, a
    path escaping the root or listed twice, two paths giving one id."""
    key, list_file = f"data.extra[{set_index}]", extra.list_file
    lines, problem = read_list_lines(
        list_file,
        missing=f"extra image list not found. Write one `<image path relative to {extra.root}> <class>[,<class>...]` "
        f"per line there, or set {key}.list to the list's path relative to {key}.root, {_without(key)}.",
        unreadable=f"Point {key}.list at the list, {_without(key)}.",
    )
    if problem:
        return [], [problem]
    listed = ListedPaths(list_file, extra.root, folder="extra image folder", root_key=f"{key}.root")
    entries: list[_Entry] = []
    problems: list[str] = []
    line_of_id: dict[str, int] = {}
    valid = f"the {classes.num_foreground} classes of data.classes: {', '.join(classes.foreground)}"
    for number, line in lines:
        where = f"{list_file}:{number}"
        relative, *rest = line.split(maxsplit=1)  # the path, then the class names (which may hold spaces)
        if not rest:
            problems.append(
                f"{where}: '{line}' names no class. Write `<image path> <class>[,<class>...]`, the classes among "
                f"{valid}."
            )
            continue
        names = [name.strip() for name in rest[0].split(",")]
        unknown = [name for name in names if name not in classes.foreground]
        if unknown:
            problems.append(
                f"{where}: unknown class name(s) {', '.join(repr(name) for name in unknown)}. Name the image's classes "
                f"separated by commas, each one of {valid}."
            )
            continue
        problem = listed.problem(number, relative)
        image_id = _image_id(set_index, relative)
        if not problem and image_id in line_of_id:
            problem = (
                f"{where}: '{relative}' gives the id '{image_id}' of line {line_of_id[image_id]}'s image (an id drops "
                "the file's suffix). Rename one of the two images."
            )
        if problem:
            problems.append(problem)
            continue
        line_of_id[image_id] = number
        labels = tuple(sorted({classes.index(name) for name in names}))
        entries.append(_Entry(image_id, os.path.normpath(relative), labels, where, "remove its line from the list"))
    return entries, problems


def _listed_voc_ids(extra: ExtraSet, key: str) -> tuple[list[tuple[str, str]], list[str]]:
    """A VOC tree's (id, what names it) pairs: its list's ids with their file:line, or, without a list, every
    annotation's, sorted; and the problems of the list's lines."""
    if extra.list_file is None:
        return [(path.stem, str(path)) for path in sorted((extra.root / "Annotations").glob("*.xml"))], []
    lines, problem = read_list_lines(
        extra.list_file,
        missing=f"extra image id list not found. Write one image id per line there (as VOC's ImageSets/Segmentation "
        f"lists), or set {key}.list to null to read every annotation of {extra.root / 'Annotations'}, {_without(key)}.",
        unreadable=f"Point {key}.list at the id list, {_without(key)}.",
    )
    if problem:
        return [], [problem]
    listed = ListedPaths(extra.list_file, extra.root / "JPEGImages", folder="image folder", root_key="JPEGImages/")
    ids: list[tuple[str, str]] = []
    problems: list[str] = []
    for number, image_id in lines:
        where = f"{extra.list_file}:{number}"
        if len(image_id.split()) > 1:
            problem = f"{where}: '{image_id}' is not an image id. Write one id per line (as VOC's split lists)."
        else:
            problem = listed.problem(number, image_id)
        if problem:
            problems.append(problem)
        else:
            ids.append((os.path.normpath(image_id), where))
    return ids, problems


def _read_voc_tree(extra: ExtraSet, set_index: int, classes: ClassList) -> tuple[list[_Entry], list[str]]:
    """A VOC tree's entries, labelled from their annotations as the main tree's, and the problems found: those of
    its list, an annotation missing, malformed, naming an unknown class or no object."""
    key = f"data.extra[{set_index}]"
    ids, problems = _listed_voc_ids(extra, key)
    removal = "remove its id from the list" if extra.list_file else "remove its annotation and image"
    entries: list[_Entry] = []
    for image_id, named_at in ids:
        labels, problem = annotation_labels(
            extra.root / "Annotations" / f"{image_id}.xml",
            classes,
            missing=f"annotation missing ({named_at}). Add the XML or {removal}.",
            empty=f"Add its objects or {removal}.",
        )
        if problem:
            problems.append(problem)
            continue
        relative = f"JPEGImages/{image_id}.jpg"
        entries.append(_Entry(_image_id(set_index, relative), relative, labels, named_at, removal))
    return entries, problems


def _read_set(extra: ExtraSet, set_index: int, classes: ClassList) -> tuple[list[_Entry], list[str]]:
    """One set's entries and the problems of its folder, its list and its labels (its images unread)."""
    key = f"data.extra[{set_index}]"
    if not extra.root.is_dir():
        return [], [f"{extra.root}: extra image folder not found. Set {key}.root to the folder, {_without(key)}."]
    reader = _read_voc_tree if extra.layout == VOC_LAYOUT else _read_image_list
    entries, problems = reader(extra, set_index, classes)
    if not entries and not problems:
        problems.append(
            f"{extra.root}: the extra set holds no image ({extra.index_path} names none). Add images, or remove "
            f"{key} (root {extra.root}) from data.extra to train without it."
        )
    return entries, problems


def validate_extra(
    sets: Sequence[ExtraSet],
    classes: ClassList,
    *,
    canvases: Mapping[str, int] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict | None:
    """Check every set and decode every image fully, before any work; raise one DataError listing every problem
    (each naming its file, and line, and the fix). `canvases`: the canvas sizes the config sets ({setting key:
    pixels}), which must hold these images too. Returns dataset.json's `extra` entry (see the module's docstring),
    or None without sets."""
    if not sets:
        return None
    problems: list[str] = []
    entries_of_set: list[list[_Entry]] = []
    for set_index, extra in enumerate(sets):
        entries, set_problems = _read_set(extra, set_index, classes)
        entries_of_set.append(entries)
        problems += set_problems
    placed = [
        (extra.root / entry.relative, entry)
        for extra, entries in zip(sets, entries_of_set, strict=True)
        for entry in entries
    ]
    present = []
    for path, entry in placed:
        if path.is_file():
            present.append((path, entry))
        else:
            problems.append(f"{path}: extra image missing ({entry.named_at}). Add the image or {entry.removal}.")
    decoded = parallel_map(decode_image, [path for path, _ in present], workers, progress, "decode extra images")
    problems += [
        f"{problem} Named at {entry.named_at}."
        for (problem, _), (_, entry) in zip(decoded, present, strict=True)
        if problem
    ]
    sides = [side for _, side in decoded]
    problems += canvas_problems([path for path, _ in present], sides, canvases or {})
    if problems:
        raise problems_error("the extra images (data.extra)", problems)
    return {
        "sets": [
            {
                "root": str(extra.root.absolute()),
                "layout": extra.layout,
                "list": extra.list_relative,
                "images": len(entries),
            }
            for extra, entries in zip(sets, entries_of_set, strict=True)
        ],
        "ids": [entry.image_id for _, entry in placed],
        "paths": {entry.image_id: entry.relative for _, entry in placed},
        "set_of": {entry.image_id: k for k, entries in enumerate(entries_of_set) for entry in entries},
        "labels": {entry.image_id: list(entry.labels) for _, entry in placed},
        "largest_side": max(sides, default=0),
    }


@dataclass(frozen=True)
class ExtraImages:
    """The extra images a checked dataset report lists, as the trainers read them: ids in training order, their
    image-level labels (dataset.json's convention: foreground class indices 1..C) and files."""

    roots: tuple[Path, ...]
    ids: tuple[str, ...]
    paths: Mapping[str, str]
    set_of: Mapping[str, int]
    labels: Mapping[str, list[int]]

    @classmethod
    def of_dataset(cls, dataset: dict) -> ExtraImages | None:
        """The report's extra images, or None when the run has none (a report without `extra`, or `extra: null`)."""
        entry = dataset.get("extra")
        if not entry:
            return None
        roots = tuple(Path(extra_set["root"]) for extra_set in entry["sets"])
        return cls(roots, tuple(entry["ids"]), entry["paths"], entry["set_of"], entry["labels"])

    def __len__(self) -> int:
        return len(self.ids)

    def path(self, image_id: str) -> Path:
        """The image file of an extra image's id."""
        return self.roots[self.set_of[image_id]] / self.paths[image_id]
