"""The VOC reader and its up-front validation, on hand-made good and malformed trees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import resize_png, snapshot, truncate, write_annotation
from wsss.core.errors import DataError
from wsss.data.canvas import canvas_size, derived_canvas
from wsss.data.classes import PALETTE, VOC, VOC_CLASSES, ClassList, class_index
from wsss.data.io import read_mask, read_rgb, write_mask
from wsss.data.voc import SplitRoles, VOCPaths, parse_annotation, read_split, validate_dataset


def validate(root: Path, **kwargs) -> dict:
    return validate_dataset(
        VOCPaths.create(root, saliency_root=root / "Saliency"), progress=False, **{"classes": VOC, **kwargs}
    )


def test_valid_tree_report(voc_tree):
    report = validate(voc_tree)
    assert report["counts"] == {"train_aug": 3, "val": 2, "test": 1}
    assert report["splits"]["train_aug"] == ["a1", "a2", "a3"]
    # a2: the difficult person is dropped; a3 keeps both classes, sorted by index.
    assert report["labels"] == {"a1": [8], "a2": [12], "a3": [4, 19]}


def test_difficult_objects_dropped_unless_all_difficult(tmp_path):
    xml = tmp_path / "x.xml"
    write_annotation(xml, [("cat", 0), ("dog", 1), ("cat", 1)])
    assert parse_annotation(xml, VOC) == (class_index("cat"),)
    write_annotation(xml, [("dog", 1), ("sheep", 1)])
    assert parse_annotation(xml, VOC) == (class_index("dog"), class_index("sheep"))
    write_annotation(xml, [("tvmonitor", 0), ("aeroplane", 0), ("tvmonitor", 0)])
    assert parse_annotation(xml, VOC) == (1, 20)


def test_deeplab_style_list_lines(voc_tree):
    list_file = voc_tree / "ImageSets" / "SegmentationAug" / "train_aug.txt"
    list_file.write_text(
        "/JPEGImages/a1.jpg /SegmentationClassAug/a1.png\n/JPEGImages/a2.jpg /SegmentationClassAug/a2.png\n"
    )
    assert read_split(VOCPaths.create(voc_tree), "train_aug") == ["a1", "a2"]


# Each malformation, and a piece of the message it must produce (the path and what is wrong).
MALFORMED = {
    "missing voc root": (lambda r: r.rename(r.with_name("moved")), "VOC2012: directory not found"),
    "missing JPEGImages": (lambda r: (r / "JPEGImages").rename(r / "x"), "JPEGImages: directory not found"),
    "missing list": (lambda r: (r / "ImageSets/Segmentation/val.txt").unlink(), "val.txt: split list 'val' not found"),
    "empty list": (lambda r: (r / "ImageSets/Segmentation/test.txt").write_text("\n"), "split list 'test' is empty"),
    "duplicate id": (
        lambda r: (r / "ImageSets/Segmentation/val.txt").write_text("v1\nv1\n"),
        "val.txt:2: id 'v1' is listed twice",
    ),
    "id without jpeg": (lambda r: (r / "JPEGImages/v2.jpg").unlink(), "v2.jpg: image missing for id 'v2'"),
    "id without xml": (lambda r: (r / "Annotations/a3.xml").unlink(), "a3.xml: annotation missing for id 'a3'"),
    "truncated jpeg": (lambda r: truncate(r / "JPEGImages/a2.jpg"), "a2.jpg: unreadable or truncated image"),
    "not a jpeg": (lambda r: (r / "JPEGImages/t1.jpg").write_bytes(b"hello"), "t1.jpg: unreadable or truncated image"),
    "mask size": (
        lambda r: resize_png(r / "SegmentationClassAug/a1.png"),
        "a1.png: mask is 20x30 (WxH) but its image is 40x30",
    ),
    "val mask missing": (lambda r: (r / "SegmentationClass/v1.png").unlink(), "v1.png: ground-truth mask missing"),
    "unknown class": (
        lambda r: write_annotation(r / "Annotations/a1.xml", [("unicorn", 0)]),
        "a1.xml: unknown class name 'unicorn'",
    ),
    "empty labels": (
        lambda r: write_annotation(r / "Annotations/a2.xml", []),
        "a2.xml: no object, so the image has an empty label set",
    ),
    "malformed xml": (lambda r: (r / "Annotations/a3.xml").write_text("<annotation><object>"), "a3.xml: malformed XML"),
    "saliency size": (lambda r: resize_png(r / "Saliency/a3.png"), "a3.png: saliency map is 20x30 (WxH)"),
    "saliency missing": (lambda r: (r / "Saliency/a2.png").unlink(), "a2.png: saliency map missing"),
    "colour mask": (
        lambda r: Image.new("RGB", (40, 30)).save(r / "SegmentationClass/v2.png"),
        "v2.png: label mask has mode 'RGB'",
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_tree_gives_specific_error(voc_tree, name):
    corrupt, expected = MALFORMED[name]
    corrupt(voc_tree)
    with pytest.raises(DataError) as info:
        validate(voc_tree)
    assert expected in str(info.value)


def test_problems_are_listed_together(voc_tree):
    (voc_tree / "JPEGImages/v2.jpg").unlink()
    write_annotation(voc_tree / "Annotations/a1.xml", [("unicorn", 0)])
    with pytest.raises(DataError, match=r"2 problem\(s\)") as info:
        validate(voc_tree)
    assert "unicorn" in str(info.value) and "v2.jpg" in str(info.value)


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grayscale_and_cmyk_jpegs_are_accepted_and_converted(voc_tree, mode):
    path = voc_tree / "JPEGImages/a1.jpg"
    Image.new(mode, (40, 30), color=100 if mode == "L" else (0, 100, 0, 0)).save(path, format="JPEG")
    validate(voc_tree)
    rgb = read_rgb(path)
    assert rgb.shape == (30, 40, 3) and rgb.dtype == np.uint8


def test_cli_failure_keeps_existing_report_and_prints_no_traceback(voc_tree, tmp_path):
    out = tmp_path / "results" / "dataset.json"
    cmd = [sys.executable, "-m", "icd", "validate-data", "--voc-root", str(voc_tree), "--out", str(out)]
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert json.loads(out.read_text())["counts"]["val"] == 2
    before = snapshot(tmp_path / "results")
    truncate(voc_tree / "JPEGImages/v1.jpg")
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: the dataset has 1 problem(s)" in result.stderr and "Traceback" not in result.stderr
    assert "v1.jpg: unreadable or truncated image" in result.stderr
    assert snapshot(tmp_path / "results") == before


def test_parallel_validation_matches_serial(voc_tree):
    (voc_tree / "ImageSets/SegmentationAug/train_aug.txt").write_text("a1\na2\na3\n")
    assert validate(voc_tree, workers=2) == validate(voc_tree, workers=1)


def test_custom_split_roles(voc_tree):
    report = validate(voc_tree, roles=SplitRoles(train="train", eval="val", test="test"))
    assert report["counts"]["train"] == 1 and report["labels"] == {"a1": [8]}


def test_palette_round_trip(tmp_path, png_mode):
    mask = np.arange(21, dtype=np.uint8).repeat(3).reshape(7, 9)
    mask[0, :3] = 255
    path = tmp_path / "m.png"
    write_mask(path, mask)
    assert png_mode(path) == "P"
    assert np.array_equal(read_mask(path), mask)
    with Image.open(path) as image:
        palette = np.array(image.getpalette()[: 256 * 3]).reshape(256, 3)
    assert np.array_equal(palette, PALETTE)
    # Known VOC colours: background, aeroplane, bicycle, person, tvmonitor, void.
    known = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 15: (192, 128, 128), 20: (0, 64, 128), 255: (224, 224, 192)}
    assert {k: tuple(PALETTE[k]) for k in known} == known
    assert len(VOC_CLASSES) == 21 and VOC_CLASSES[15] == "person"


def test_non_atomic_mask_write_gives_the_same_file(tmp_path):
    """Inside an atomic folder the per-file temporary is skipped: the same bytes, the parent made, and no
    temporary next to it."""
    mask = np.arange(21, dtype=np.uint8).repeat(4).reshape(6, 14)
    write_mask(tmp_path / "atomic.png", mask)
    write_mask(tmp_path / "sub" / "plain.png", mask, atomic=False)
    assert (tmp_path / "sub" / "plain.png").read_bytes() == (tmp_path / "atomic.png").read_bytes()
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["atomic.png", "plain.png", "sub"]


def test_mask_values_outside_the_dataset_classes_are_rejected(tmp_path):
    path = tmp_path / "m.png"
    Image.fromarray(np.full((4, 4), 42, np.uint8), mode="L").save(path)
    with pytest.raises(DataError, match=r"m.png: label mask holds values \[42\] outside 0..20 and 255"):
        read_mask(path, VOC.num_classes)
    with pytest.raises(DataError, match=r"values \[42\] outside 0..3 and 255.*3 classes"):
        read_mask(path, 4)
    assert (read_mask(path, 43) == 42).all() and (read_mask(path) == 42).all()  # COCO-sized; only drawn


def test_atomic_writes_get_the_usual_permissions_and_replace_only_on_success(tmp_path):
    import os

    from wsss.core.files import atomic_dir, write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "new")
        assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
        with atomic_dir(tmp_path / "folder") as folder:
            (folder / "x").write_text("1")
        assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
        with pytest.raises(RuntimeError), atomic_dir(tmp_path / "folder") as folder:
            (folder / "y").write_text("2")
            raise RuntimeError("interrupted")
        assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["x"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "folder"]  # no temporaries left
    finally:
        os.umask(umask)


def test_the_same_tensors_saved_twice_are_the_same_bytes_and_load_back(tmp_path):
    """Weights written through atomic_path's temporary files: equal objects give equal files (torch would name the
    zip's records after each random temporary name), and torch.load reads them back."""
    import zipfile

    import torch

    from wsss.core.files import save_torch

    state = {"weight": torch.arange(6.0).reshape(2, 3), "fingerprint": "run"}
    save_torch(state, tmp_path / "a.pth")
    save_torch(state, tmp_path / "b.pth")
    assert (tmp_path / "a.pth").read_bytes() == (tmp_path / "b.pth").read_bytes()
    assert all(name.startswith("archive/") for name in zipfile.ZipFile(tmp_path / "a.pth").namelist())
    loaded = torch.load(tmp_path / "a.pth", weights_only=True)
    assert torch.equal(loaded["weight"], state["weight"]) and loaded["fingerprint"] == "run"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.pth", "b.pth"]  # no temporaries left


def test_a_rerun_removes_the_temporaries_of_a_killed_writer_and_only_those(tmp_path):
    import os
    import subprocess
    import sys

    from wsss.core.files import atomic_dir, write_text

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = int(finished.stdout), os.getpid()  # a process that has exited, and this one
    debris = [tmp_path / f".a.{dead}.x1.tmp.txt", tmp_path / f".folder.{dead}.x2.tmp"]
    kept = [tmp_path / f".a.{live}.x3.tmp.txt", tmp_path / f".b.{dead}.x4.tmp.txt", tmp_path / ".a.notes.tmp.txt"]
    for path in debris + kept:
        path.mkdir() if path.suffix == ".tmp" else path.write_text("partial")
    (debris[1] / "inner").write_text("partial")
    write_text(tmp_path / "a.txt", "new")
    with atomic_dir(tmp_path / "folder") as folder:
        (folder / "x").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.txt", "folder"] + [p.name for p in kept])
    assert (tmp_path / "a.txt").read_text() == "new"


def test_a_dataset_of_its_own_classes_is_read_with_them(voc_tree):
    """data.classes: the XML names map to the list's order (1-based), masks are checked against its size, the
    report records it; a VOC name outside the list is the usual clear error."""
    own = ClassList(("dog", "cat", "boat", "train", "car", "bird", "person", "sheep"))  # the masks hold 8: sheep
    report = validate(voc_tree, classes=own)
    assert report["classes"] == list(own.foreground)
    assert report["labels"] == {"a1": [2], "a2": [1], "a3": [3, 4]}  # a2's difficult person dropped, as for VOC
    assert ClassList.of_dataset(report) == own and own.names[0] == "background" and own.num_classes == 9
    with pytest.raises(DataError, match=r"a1.xml: unknown class name 'cat'. .* 2 classes of data.classes: dog, bird"):
        validate(voc_tree, classes=ClassList(("dog", "bird")))
    # 8 is outside a 7-class list's 0..7, and named.
    narrow = ClassList(("dog", "cat", "boat", "train", "car", "bird", "person"))
    with pytest.raises(DataError, match=r"SegmentationClass/v1.png: label mask holds values \[8\] outside 0..7"):
        validate(voc_tree, classes=narrow)


@pytest.mark.parametrize(
    "names", [(), ("a", "a"), ("background", "b"), (" a",), ("",), tuple(f"c{i}" for i in range(255))]
)
def test_a_class_list_refuses_what_no_label_map_can_hold(names):
    with pytest.raises(ValueError):
        ClassList(names)


def test_the_canvas_follows_the_largest_image_and_a_set_canvas_too_small_is_named_up_front(voc_tree):
    """The official 513 is VOC's 500 px rounded up to 32k + 1; the check records the largest side, from which every
    step derives its canvas, and refuses a configured canvas an image does not fit in before any heavy job."""
    assert [derived_canvas(side) for side in (1, 33, 128, 129, 130, 500, 513)] == [1, 33, 129, 129, 161, 513, 513]
    report = validate(voc_tree, canvases={"seeds.inference_size": 40})
    assert report["largest_side"] == 40  # the tree's images are 40 x 30
    assert canvas_size(None, report) == 65 and canvas_size(40, report) == 40
    with pytest.raises(
        DataError,
        match=r"JPEGImages/\w+.jpg: image side of 40 px is larger than "
        r"superpixels.feature_input_size 33.*Raise superpixels.feature_input_size to at least 40",
    ):
        validate(voc_tree, canvases={"superpixels.feature_input_size": 33, "seeds.inference_size": 65})
