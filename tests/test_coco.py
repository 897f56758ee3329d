"""The COCO 2014 -> VOC layout converter, on a tiny hand-made COCO tree, checked against references drawn here.

The references are independent of pycocotools: rectangles and polygons are drawn with PIL.ImageDraw and the
uncompressed RLE is decoded in numpy. pycocotools only encodes the compressed-RLE input, whose reference is the
numpy mask it encodes.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils
from scipy.ndimage import binary_dilation

from wsss.core.errors import DataError
from wsss.data.classes import ClassList
from wsss.data.coco import COCO_CATEGORY_IDS, COCO_CLASSES, convert_coco
from wsss.data.io import read_mask
from wsss.data.voc import parse_annotation

# pycocotools 2.0.10 decodes through a NumPy 1 style __array__, which NumPy 2 flags on every call.
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# The ids COCO left out of 1..90; a category's label is its rank among the ids kept.
MISSING_IDS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
PERSON, TRAFFIC_LIGHT, CAT, DOG, GIRAFFE, DINING_TABLE, TOOTHBRUSH = 1, 10, 17, 18, 25, 67, 90


def label(coco_id: int) -> int:
    return coco_id - sum(missing < coco_id for missing in MISSING_IDS)


def rectangle(x0: int, y0: int, x1: int, y1: int) -> list[int]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def draw_rectangle(target: np.ndarray, box: tuple[int, int, int, int], value: int) -> None:
    """COCO polygon coordinates lie on pixel edges: the box (x0, y0)-(x1, y1) covers columns x0..x1-1, rows y0..y1-1."""
    image = Image.fromarray(target)
    x0, y0, x1, y1 = box
    ImageDraw.Draw(image).rectangle((x0, y0, x1 - 1, y1 - 1), fill=value)
    target[:] = np.asarray(image)


def decode_counts(counts: list[int], height: int, width: int) -> np.ndarray:
    """Uncompressed RLE: runs alternating 0s and 1s, 0s first, over the pixels in column-major order."""
    return np.repeat(np.arange(len(counts)) % 2, counts).reshape(width, height).T.astype(bool)


# train 9 (10 x 12): a traffic light (uncompressed RLE, first), a person over part of it, a crowd of toothbrushes
# over the bottom rows, then a dog over part of the person and of the crowd.
LIGHT_COUNTS = [12, 4, 6, 4, 94]  # columns 1 and 2, rows 2..5
CROWD_COUNTS = [7, 3] * 12  # rows 7..9 of every column
PERSON_BOX, DOG_BOX = (2, 1, 7, 6), (5, 4, 11, 9)
# train 25 (8 x 9): a giraffe as compressed RLE.
GIRAFFE_MASK = np.zeros((8, 9), dtype=bool)
GIRAFFE_MASK[1:7, 2:4] = GIRAFFE_MASK[5:7, 4:8] = True
# val 42 (30 x 40): a cat triangle, then a dining table of two parts plus a 2-point part that encloses nothing.
CAT_TRIANGLE = [(2, 2), (36, 3), (4, 27)]
TABLE_BOXES = [(30, 20, 38, 28), (0, 28, 10, 30)]

TRAIN, VAL = "COCO_train2014_0000000000{:02d}", "COCO_val2014_0000000000{:02d}"
ID_FORMAT = {"train2014": TRAIN, "val2014": VAL}
SIZES = {"train2014": {9: (10, 12), 25: (8, 9), 30: (6, 6), 34: (10, 12)}, "val2014": {42: (30, 40), 73: (5, 7)}}


def categories() -> list[dict]:
    return [
        {"id": i, "name": n, "supercategory": "thing"} for i, n in zip(COCO_CATEGORY_IDS, COCO_CLASSES, strict=True)
    ]


def annotation(number: int, image: int, category: int, segmentation, crowd: int = 0) -> dict:
    return {"id": number, "image_id": image, "category_id": category, "segmentation": segmentation, "iscrowd": crowd}


def instances(folder: str) -> dict:
    """The instances JSON of one folder; annotations of different images interleave, as in COCO's files."""
    images = [
        {"id": number, "file_name": f"{ID_FORMAT[folder].format(number)}.jpg", "height": height, "width": width}
        for number, (height, width) in SIZES[folder].items()
    ]
    if folder == "train2014":
        giraffe = mask_utils.encode(np.asfortranarray(GIRAFFE_MASK.astype(np.uint8)))
        annotations = [
            annotation(1, 9, TRAFFIC_LIGHT, {"counts": LIGHT_COUNTS, "size": [10, 12]}),
            annotation(2, 25, GIRAFFE, {"counts": giraffe["counts"].decode("ascii"), "size": [8, 9]}),
            annotation(3, 9, PERSON, [rectangle(*PERSON_BOX)]),
            annotation(4, 9, TOOTHBRUSH, {"counts": CROWD_COUNTS, "size": [10, 12]}, crowd=1),
            annotation(5, 34, PERSON, {"counts": CROWD_COUNTS, "size": [10, 12]}, crowd=1),
            annotation(6, 9, DOG, [rectangle(*DOG_BOX)]),
        ]
    else:
        table = [[0, 0, 10, 8], *(rectangle(*box) for box in TABLE_BOXES)]
        annotations = [
            annotation(7, 42, CAT, [[v for point in CAT_TRIANGLE for v in point]]),
            annotation(8, 42, DINING_TABLE, table),
        ]
    return {"images": images, "annotations": annotations, "categories": categories()}


def make_coco(root: Path) -> Path:
    for folder, sizes in SIZES.items():
        for number, (height, width) in sizes.items():
            path = _mkdir(root / folder) / f"{ID_FORMAT[folder].format(number)}.jpg"
            Image.new("RGB", (width, height), (90, 120, 150)).save(path)
        write_json(root, folder, instances(folder))
    return root


def write_json(root: Path, folder: str, data: dict) -> None:
    path = root / "annotations" / f"instances_{folder}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def edit_json(root: Path, folder: str, edit) -> None:
    data = json.loads((root / "annotations" / f"instances_{folder}.json").read_text())
    edit(data)
    write_json(root, folder, data)


@pytest.fixture
def coco(tmp_path) -> Path:
    return make_coco(tmp_path / "coco")


@pytest.fixture
def converted(coco, tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "out" / "COCO2014"
    return out, convert_coco(coco, out, progress=False)


def test_class_maps_match_references(converted):
    out, _ = converted
    maps = {p.stem: read_mask(p, len(COCO_CLASSES) + 1) for p in (out / "SegmentationClass").glob("*.png")}
    assert sorted(maps) == [TRAIN.format(9), TRAIN.format(25), VAL.format(42)]

    expected = np.zeros((10, 12), dtype=np.uint8)
    expected[decode_counts(LIGHT_COUNTS, 10, 12)] = label(TRAFFIC_LIGHT)
    draw_rectangle(expected, PERSON_BOX, label(PERSON))  # later annotations win where instances overlap
    draw_rectangle(expected, DOG_BOX, label(DOG))  # the crowd before it is not painted at all
    assert (expected == label(TRAFFIC_LIGHT)).sum() == 4 and (expected[7:] == 0).any()
    np.testing.assert_array_equal(maps[TRAIN.format(9)], expected)

    np.testing.assert_array_equal(maps[TRAIN.format(25)], np.where(GIRAFFE_MASK, label(GIRAFFE), 0))

    # Rasterisers put a sloping edge on slightly different pixels: away from PIL's outline of the triangle (one
    # pixel either side) the map must equal PIL's fill, near it hold the cat or background.
    triangle, outline = Image.new("L", (40, 30)), Image.new("L", (40, 30))
    ImageDraw.Draw(triangle).polygon(CAT_TRIANGLE, fill=label(CAT))
    ImageDraw.Draw(outline).polygon(CAT_TRIANGLE, outline=1)
    expected = np.asarray(triangle).copy()
    for box in TABLE_BOXES:
        draw_rectangle(expected, box, label(DINING_TABLE))
    near_edge = binary_dilation(np.asarray(outline), np.ones((3, 3))) & (expected != label(DINING_TABLE))
    found = maps[VAL.format(42)]
    np.testing.assert_array_equal(found[~near_edge], expected[~near_edge])
    assert set(np.unique(found[near_edge])) <= {0, label(CAT)}
    assert (expected[~near_edge] == label(CAT)).sum() > 250  # a real interior is compared exactly
    assert (found == label(DINING_TABLE)).sum() == 64 + 20  # the 2-point part adds nothing (not read as a box)


def test_labels_splits_and_xml(converted):
    out, _ = converted
    lists = out / "ImageSets" / "Segmentation"
    assert (lists / "train.txt").read_text().split() == [TRAIN.format(9), TRAIN.format(25)]
    assert (lists / "val.txt").read_text().split() == [VAL.format(42)]

    root = ET.parse(out / "Annotations" / f"{TRAIN.format(9)}.xml").getroot()
    assert [o.findtext("name") for o in root.iter("object")] == ["person", "traffic light", "dog"]
    assert [o.findtext("difficult") for o in root.iter("object")] == ["0"] * 3
    assert (root.findtext("filename"), root.findtext("size/width"), root.findtext("size/height")) == (
        f"{TRAIN.format(9)}.jpg",
        "12",
        "10",
    )
    # The pipeline's own reader accepts the XML; the crowd-only toothbrush is no label.
    classes = ClassList(COCO_CLASSES)
    assert (
        parse_annotation(out / "Annotations" / f"{TRAIN.format(9)}.xml", classes)
        == (1, 10, 17)
        == (label(PERSON), label(TRAFFIC_LIGHT), label(DOG))
    )
    assert (
        parse_annotation(out / "Annotations" / f"{VAL.format(42)}.xml", classes)
        == (16, 61)
        == (label(CAT), label(DINING_TABLE))
    )
    assert parse_annotation(out / "Annotations" / f"{TRAIN.format(25)}.xml", classes) == (label(GIRAFFE),)


def test_category_mapping(converted):
    out, _ = converted
    assert tuple(i for i in range(1, 91) if i not in MISSING_IDS) == COCO_CATEGORY_IDS
    assert len(COCO_CLASSES) == 80 and len(set(COCO_CLASSES)) == 80
    mapping = json.loads((out / "categories.json").read_text())
    assert mapping["background"] == 0 and len(mapping["categories"]) == 80
    assert mapping["categories"]["1"] == {"index": 1, "name": "person"}
    assert mapping["categories"]["13"] == {"index": 12, "name": "stop sign"}
    assert mapping["categories"]["67"] == {"index": 61, "name": "dining table"}
    assert mapping["categories"]["90"] == {"index": 80, "name": "toothbrush"}


def test_images_are_symlinks_to_the_originals(converted, coco):
    out, _ = converted
    links = sorted((out / "JPEGImages").iterdir())
    assert [p.stem for p in links] == [TRAIN.format(9), TRAIN.format(25), VAL.format(42)]
    for link in links:
        assert link.is_symlink()
        assert Path(os.readlink(link)) == coco.absolute() / link.stem.split("_")[1] / link.name


def test_report_and_counts_printed(coco, tmp_path, capsys):
    report = convert_coco(coco, tmp_path / "out", progress=False)
    assert report["counts"] == {"train": 2, "val": 1}
    assert report["without_labels"] == {"train": 2, "val": 1}  # train 30 (no annotation), 34 (crowd only); val 73
    assert report["splits"] == {"train": "train", "eval": "val"} and report["num_classes"] == 81
    printed = capsys.readouterr().out
    assert "train2014: 2 labelled images -> split 'train'; 2 without labels" in printed
    assert "val2014: 1 labelled images -> split 'val'; 1 without labels" in printed


def test_workers_write_the_same_tree(tmp_path):
    """Enough images for the process pool (parallel_map runs short lists inline)."""
    root = tmp_path / "coco"
    data = {"images": [], "annotations": [], "categories": categories()}
    for number in range(1, 71):
        image_id = TRAIN.format(number)
        Image.new("RGB", (6, 5)).save(_mkdir(root / "train2014") / f"{image_id}.jpg")
        data["images"].append({"id": number, "file_name": f"{image_id}.jpg", "height": 5, "width": 6})
        box = rectangle(number % 5, number % 4, 6, 5)
        data["annotations"].append(annotation(number, number, COCO_CATEGORY_IDS[number % 80], [box]))
    write_json(root, "train2014", data)
    write_json(root, "val2014", {**data, "images": [], "annotations": []})
    _mkdir(root / "val2014")
    serial = convert_coco(root, tmp_path / "serial", progress=False)
    parallel = convert_coco(root, tmp_path / "parallel", workers=2, progress=False)
    assert serial["counts"] == parallel["counts"] == {"train": 70, "val": 0}
    assert snapshot(tmp_path / "serial") == snapshot(tmp_path / "parallel")


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def snapshot(root: Path) -> dict[str, str | bytes]:
    """Every file's bytes and every link's target, by relative path."""
    return {
        str(p.relative_to(root)): os.readlink(p) if p.is_symlink() else p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


def _first_annotation(**changes):
    return lambda data: data["annotations"][0].update(changes)


BAD_INPUTS = {
    "missing folder": (lambda r: shutil.rmtree(r / "val2014"), ["val2014: not found"]),
    "missing JSON": (
        lambda r: (r / "annotations/instances_val2014.json").unlink(),
        ["instances_val2014.json: not found"],
    ),
    "missing image": (
        lambda r: (r / "train2014" / f"{TRAIN.format(25)}.jpg").unlink(),
        [f"{TRAIN.format(25)}.jpg: image missing, though", "instances_train2014.json lists it"],
    ),
    "unknown category": (
        lambda r: edit_json(r, "train2014", _first_annotation(category_id=12)),
        ["instances_train2014.json: annotation 1: unknown category id 12"],
    ),
    "annotation of an unknown image": (
        lambda r: edit_json(r, "val2014", _first_annotation(image_id=999)),
        ["instances_val2014.json: annotation 7: image id 999 is not in 'images'"],
    ),
    "image listed twice": (
        lambda r: edit_json(r, "val2014", lambda data: data["images"].append(data["images"][0])),
        ["instances_val2014.json: image entry", "id 42 is listed twice"],
    ),
    "malformed JSON": (
        lambda r: (r / "annotations/instances_val2014.json").write_text('{"images": ['),
        ["instances_val2014.json: malformed JSON"],
    ),
    "JSON without annotations": (
        lambda r: edit_json(r, "train2014", lambda data: data.pop("annotations")),
        ["instances_train2014.json: no 'annotations' list"],
    ),
    "renamed category": (
        lambda r: edit_json(r, "val2014", lambda data: data["categories"][-1].update(name="tooth brush")),
        ["instances_val2014.json: its categories are not COCO 2014's 80", "(90, 'toothbrush')"],
    ),
    "missing category": (
        lambda r: edit_json(r, "val2014", lambda data: data["categories"].pop(3)),
        ["instances_val2014.json: its categories are not COCO 2014's 80", "79 in all"],
    ),
    "RLE of another size": (
        lambda r: edit_json(r, "train2014", _first_annotation(segmentation={"counts": [120], "size": [12, 10]})),
        ["instances_train2014.json: annotation 1: RLE size [12, 10] is not the image's [height, width] [10, 12]"],
    ),
    "RLE counts not covering the image": (
        lambda r: edit_json(r, "train2014", _first_annotation(segmentation={"counts": [100, 4], "size": [10, 12]})),
        ["instances_train2014.json: annotation 1: uncompressed RLE counts sum to 104"],
    ),
    "odd polygon": (
        lambda r: edit_json(r, "val2014", _first_annotation(segmentation=[[1, 1, 5, 1, 5]])),
        ["instances_val2014.json: annotation 7: 'segmentation' polygons must be lists of x, y pairs"],
    ),
    "image of another size": (
        lambda r: Image.new("RGB", (4, 4)).save(r / "val2014" / f"{VAL.format(42)}.jpg"),
        [f"{VAL.format(42)}.jpg: image is 4x4 (WxH) but", "instances_val2014.json says 40x30"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_named_and_output_untouched(case, converted, coco):
    out, _ = converted
    before = snapshot(out)
    damage, fragments = BAD_INPUTS[case]
    damage(coco)
    with pytest.raises(DataError) as error:
        convert_coco(coco, out, progress=False)
    for fragment in fragments:
        assert fragment in str(error.value)
    assert snapshot(out) == before
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no temporary left beside it


def test_problems_reported_together(coco, tmp_path):
    (coco / "train2014" / f"{TRAIN.format(9)}.jpg").unlink()
    edit_json(coco, "train2014", _first_annotation(category_id=91))
    (coco / "annotations/instances_val2014.json").write_text("not json")
    with pytest.raises(DataError, match=r"has 3 problem\(s\)") as error:
        convert_coco(coco, tmp_path / "out", progress=False)
    message = str(error.value)
    assert f"{TRAIN.format(9)}.jpg: image missing" in message
    assert "unknown category id 91" in message and "instances_val2014.json: malformed JSON" in message
    assert not (tmp_path / "out").exists()
