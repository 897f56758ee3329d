"""SBD as downloaded (wsss.data.sbd): its release recognised, its .mat maps converted into the SegmentationClassAug
layout with the standard train_aug list, bad files named, a failed conversion harmless, and the workflow planning
the conversion before the dataset check."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
from PIL import Image

from benchmarks.dryrun import VOC_COUNTS, fabricate_layout
from tests.conftest import make_voc_tree, snapshot, split_ids, split_list
from tests.workflow_helpers import snakemake
from wsss.core.config import PROJECT_ROOT, load_config
from wsss.core.errors import DataError
from wsss.data.classes import NUM_FOREGROUND
from wsss.data.io import read_mask, write_jpeg
from wsss.data.sbd import convert_sbd, release_folder
from wsss.workflow import dataset_roots, sbd_release

# SBD's lists in the test release, and VOC's train list rewritten to hold an id SBD lacks (a3) beside one it has (a1).
SBD_LISTS = {"train": ["a2", "s1", "v1"], "val": ["a1", "s2"]}
VOC_TRAIN = ["a1", "a3"]
SIZES = {"s2": (25, 35)}  # (H, W); the others have the VOC tree's 30 x 40


def sbd_map_struct(segmentation: np.ndarray) -> dict:
    """GTcls as SBD's cls/<id>.mat holds it: a struct of Boundaries (a cell of one sparse boundary map per class),
    Segmentation (the H x W uint8 class map) and CategoriesPresent (the classes in the map)."""
    boundaries = np.empty((NUM_FOREGROUND, 1), dtype=object)
    for label in range(1, NUM_FOREGROUND + 1):
        inside = segmentation == label
        edge = inside & ~np.pad(inside, 1)[1:-1, 2:]  # the class's pixels whose right neighbour is not
        boundaries[label - 1, 0] = scipy.sparse.csc_matrix(edge)
    present = np.unique(segmentation[(segmentation > 0) & (segmentation < 255)]).astype(np.uint8)
    return {"Boundaries": boundaries, "Segmentation": segmentation, "CategoriesPresent": present.reshape(-1, 1)}


def write_sbd_map(path: Path, variables: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, variables)


def sbd_segmentation(image_id: str) -> np.ndarray:
    """A distinct class map per id: two rectangles of classes drawn from the id."""
    height, width = SIZES.get(image_id, (30, 40))
    seed = sum(map(ord, image_id))
    segmentation = np.zeros((height, width), np.uint8)
    segmentation[2:12, 3 : 3 + seed % 20] = 1 + seed % 20
    segmentation[15:, width // 2 :] = 1 + (seed * 7) % 20
    return segmentation


@pytest.fixture
def data(tmp_path) -> dict[str, Path]:
    """A VOC tree (tests/conftest.py) and SBD's release beside it, as benchmark_RELEASE/dataset."""
    voc = make_voc_tree(tmp_path / "VOC2012")
    split_list(voc, "train").write_text("".join(f"{i}\n" for i in VOC_TRAIN))
    release = tmp_path / "benchmark_RELEASE" / "dataset"
    rng = np.random.default_rng(1)
    for split, ids in SBD_LISTS.items():
        for image_id in ids:
            segmentation = sbd_segmentation(image_id)
            write_sbd_map(release / "cls" / f"{image_id}.mat", {"GTcls": sbd_map_struct(segmentation)})
            write_jpeg(release / "img" / f"{image_id}.jpg", rng.integers(0, 255, (*segmentation.shape, 3), np.uint8))
        (release / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
    return {"voc": voc, "release": release, "out": tmp_path / "results" / "data" / "SBD"}


def convert(data: dict[str, Path]) -> dict:
    return convert_sbd(data["release"].parent, data["voc"], data["out"], progress=False)


def test_the_release_is_recognised_from_its_folder_or_the_one_above_and_a_ready_tree_is_not(data, tmp_path):
    release = data["release"]
    assert release_folder(release) == release
    assert release_folder(release.parent) == release  # benchmark_RELEASE/ itself
    assert release_folder(data["voc"]) is None  # the VOC tree holds a ready SegmentationClassAug/
    assert release_folder(tmp_path / "empty") is None
    (release / "SegmentationClassAug").mkdir()
    assert release_folder(release) is None  # a ready tree is read as ready, whatever lies beside it


def test_planning_reads_the_converted_folder_for_a_release_and_a_ready_tree_where_it_is(data):
    def planned(sbd_root: Path) -> tuple[str | None, str]:
        config = load_config(
            overrides={
                "run": "voc",
                "data": {"source": "voc", "voc_root": str(data["voc"]), "sbd_root": str(sbd_root)},
                "pretrain": {"weights": "/weights/vgg16.pth"},
            }
        )
        return sbd_release(config), dataset_roots(config)[1]

    assert planned(data["release"].parent) == (str(data["release"]), "results/voc/data/SBD")
    assert planned(data["release"]) == (str(data["release"]), "results/voc/data/SBD")
    assert planned(data["voc"]) == (None, str(data["voc"]))
    assert sbd_release(load_config()) is None  # synthetic data


def test_conversion_writes_the_standard_train_aug_and_each_ids_mask(data):
    counts = convert(data)
    voc_val = split_ids(data["voc"], "val")
    # the standard rule, written out: SBD's train and val and VOC's train, without VOC's val, sorted
    expected = []
    for image_id in SBD_LISTS["train"] + SBD_LISTS["val"] + VOC_TRAIN:
        if image_id not in voc_val and image_id not in expected:
            expected.append(image_id)
    expected.sort()
    assert expected == ["a1", "a2", "a3", "s1", "s2"]
    out = data["out"]
    assert (out / "ImageSets" / "SegmentationAug" / "train_aug.txt").read_text() == "".join(f"{i}\n" for i in expected)
    assert sorted(path.stem for path in (out / "SegmentationClassAug").iterdir()) == expected
    assert counts == {"train_aug": 5, "masks_from_voc": 2, "masks_from_sbd": 3}
    for image_id in expected:
        mask = out / "SegmentationClassAug" / f"{image_id}.png"
        with Image.open(mask) as image:
            assert image.mode == "P"
        if image_id in VOC_TRAIN:  # a1 is in SBD too: VOC's own mask wins
            reference = read_mask(data["voc"] / "SegmentationClass" / f"{image_id}.png")
            assert not np.array_equal(reference, sbd_segmentation(image_id))
        else:
            reference = scipy.io.loadmat(data["release"] / "cls" / f"{image_id}.mat")["GTcls"]["Segmentation"][0, 0]
            assert reference.shape == SIZES.get(image_id, (30, 40))
        np.testing.assert_array_equal(read_mask(mask), reference)


def test_the_verb_converts(data):
    arguments = ["--sbd-root", data["release"], "--voc-root", data["voc"], "--out", data["out"]]
    result = subprocess.run(
        [sys.executable, "-m", "icd", "convert-sbd", *arguments],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert result.returncode == 0, result.stderr
    listed = (data["out"] / "ImageSets" / "SegmentationAug" / "train_aug.txt").read_text().split()
    assert listed == ["a1", "a2", "a3", "s1", "s2"]


def _replace_map(image_id: str, variables: dict) -> Callable[[Path], None]:
    return lambda release: write_sbd_map(release / "cls" / f"{image_id}.mat", variables)


def _labels(values: list[int]) -> np.ndarray:
    segmentation = sbd_segmentation("s1").astype(np.int32)
    segmentation[0, : len(values)] = values
    return segmentation


def _resize_image(release: Path) -> None:
    path = release / "img" / "s1.jpg"
    with Image.open(path) as image:
        image.resize((image.width - 1, image.height)).save(path)


# how the release is broken: (change, texts the error must hold)
BROKEN = {
    "no GTcls": (_replace_map("s1", {"GTinst": sbd_map_struct(sbd_segmentation("s1"))}), ["cls/s1.mat", "no GTcls"]),
    "no Segmentation": (
        _replace_map("s1", {"GTcls": {"Boundaries": np.zeros((2, 2)), "CategoriesPresent": np.uint8(1)}}),
        ["cls/s1.mat", "no Segmentation field"],
    ),
    "labels outside 0..20 and 255": (
        _replace_map("s1", {"GTcls": {**sbd_map_struct(sbd_segmentation("s1")), "Segmentation": _labels([21, 300])}}),
        ["cls/s1.mat", "labels [21, 300] outside 0..20 and 255"],
    ),
    "map and image sizes differ": (
        _resize_image,
        ["cls/s1.mat", "is 40x30 (WxH) but its image", "img/s1.jpg", "39x30"],
    ),
    "not a .mat file": (
        lambda release: (release / "cls" / "s1.mat").write_bytes(b"<html>"),
        ["cls/s1.mat", "unreadable"],
    ),
    "listed id without image": (lambda release: (release / "img" / "s2.jpg").unlink(), ["img/s2.jpg: missing", "'s2'"]),
    "listed id without map": (lambda release: (release / "cls" / "v1.mat").unlink(), ["cls/v1.mat: missing", "'v1'"]),
    "no val.txt": (lambda release: (release / "val.txt").unlink(), ["val.txt: SBD's split list(s) not found"]),
}


@pytest.mark.parametrize("name", BROKEN)
def test_a_broken_release_is_rejected_naming_the_file_and_leaves_the_previous_conversion(data, name):
    convert(data)
    before = snapshot(data["out"])
    change, texts = BROKEN[name]
    change(data["release"])
    with pytest.raises(DataError) as error:
        convert(data)
    for text in texts:
        assert text in str(error.value)
    assert snapshot(data["out"]) == before
    assert [path.name for path in data["out"].parent.iterdir()] == ["SBD"]  # no temporary left behind


def test_every_problem_is_reported_at_once(data):
    (data["release"] / "img" / "s2.jpg").unlink()
    _replace_map("a2", {"GTinst": np.zeros(1)})(data["release"])
    (data["voc"] / "SegmentationClass" / "a3.png").unlink()  # VOC's mask of an id SBD lacks
    with pytest.raises(DataError, match=r"3 problem\(s\)") as error:
        convert(data)
    message = str(error.value)
    assert all(text in message for text in ("img/s2.jpg: missing", "cls/a2.mat: no GTcls", "SegmentationClass/a3.png"))
    assert not data["out"].exists()


def test_a_dry_run_plans_the_conversion_before_the_dataset_check(data, tmp_path):
    config = fabricate_layout(tmp_path / "fabricated", dict.fromkeys(VOC_COUNTS, 3))
    config["data"]["sbd_root"] = str(data["release"].parent)  # SBD as downloaded, benchmark_RELEASE itself
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    result = snakemake(workdir, "-n", config=config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", result.stdout, re.MULTILINE)
    order = [rule for rule, _ in jobs]
    blocks = dict(jobs)
    assert order.count("convert_sbd") == 1
    assert order.index("convert_sbd") < order.index("validate_data")
    assert re.search(rf"^    input: {re.escape(str(data['release']))}, ", blocks["convert_sbd"], re.M)
    assert re.search(r"^    output: results/voc/data/SBD$", blocks["convert_sbd"], re.M)
    validate_inputs = re.search(r"^    input: (.*)$", blocks["validate_data"], re.M)[1].split(", ")
    assert "results/voc/data/SBD" in validate_inputs and str(data["release"].parent) not in validate_inputs
