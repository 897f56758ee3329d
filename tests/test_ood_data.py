"""Hard out-of-distribution images (W-OoD): the list reader and its up-front check on hand-made folders, the
dataset check's `ood` entry, and the workflow planning and stopping on a bad OoD set."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import snapshot, truncate
from tests.workflow_helpers import TINY, snakemake
from wsss.core.config import check_data_roots, load_config
from wsss.core.errors import ConfigError, DataError
from wsss.data import synthetic
from wsss.data.io import read_rgb, write_jpeg
from wsss.data.ood import DEFAULT_LIST, OoDImages, OoDList, validate_ood
from wsss.workflow import GENERATED_OOD, as_json, checked_dataset, dataset_check, ood_inputs, ood_set

# The hand-made set: a colour JPEG, a grey one in a subfolder and a CMYK one, (H, W) each.
IMAGES = {"JPEGImages/colour.jpg": (30, 40), "more/grey.jpg": (20, 24), "JPEGImages/cmyk.jpg": (16, 12)}


@pytest.fixture
def ood_root(tmp_path: Path) -> Path:
    """An OoD folder in W-OoD's layout, its list with Windows line ends, a blank line and stray spaces."""
    root = tmp_path / "OoD"
    rng = np.random.default_rng(0)
    for relative, (height, width) in IMAGES.items():
        path = root / relative
        if "grey" in relative:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8), mode="L").save(path, format="JPEG")
        elif "cmyk" in relative:
            Image.new("CMYK", (width, height), color=(0, 200, 200, 0)).save(path, format="JPEG")
        else:
            write_jpeg(path, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    (root / DEFAULT_LIST).write_bytes(b"JPEGImages/colour.jpg\r\n\r\n  more/grey.jpg \r\nJPEGImages/cmyk.jpg")
    return root


def check(root: Path, list_name: str = DEFAULT_LIST) -> dict:
    return validate_ood(OoDList(root, list_name), progress=False)


def test_the_list_is_read_in_order_and_grey_and_cmyk_images_as_rgb(ood_root):
    entry = check(ood_root)
    assert entry == {"root": str(ood_root.absolute()), "list": DEFAULT_LIST, "images": list(IMAGES)}
    images = OoDImages.of_dataset({"ood": entry})
    assert len(images) == 3
    for index, (relative, (height, width)) in enumerate(IMAGES.items()):
        rgb = images.read(index)
        assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8, relative
        assert np.array_equal(rgb, read_rgb(ood_root / relative))
    grey, cmyk = images.read(1).astype(int), images.read(2).astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert np.abs(cmyk.mean(axis=(0, 1)) - (255, 55, 55)).max() < 10  # no cyan, much magenta and yellow: red
    assert OoDImages.of_dataset({"counts": {}}) is None and OoDImages.of_dataset({"ood": None}) is None


def test_a_list_elsewhere_under_the_root_names_paths_relative_to_the_root(ood_root):
    (ood_root / "lists").mkdir()
    (ood_root / "lists" / "few.txt").write_text("more/grey.jpg\n")
    assert check(ood_root, "lists/few.txt")["images"] == ["more/grey.jpg"]


def _list(text: str):
    return lambda root: (root / DEFAULT_LIST).write_text(text)


def _outside(root: Path) -> None:
    """A readable image beside the OoD folder, listed through `..`: refused for where it lies, not for its bytes."""
    write_jpeg(root.parent / "outside.jpg", np.zeros((8, 8, 3), np.uint8))
    (root / DEFAULT_LIST).write_text("JPEGImages/colour.jpg\n../outside.jpg\n")


# Each malformation, and pieces of the message it must produce: the file (and line) and the fix.
MALFORMED = {
    "missing image": (
        _list("JPEGImages/colour.jpg\nJPEGImages/gone.jpg\n"),
        ["JPEGImages/gone.jpg: OoD image missing", "ood_list.txt:2)", "Add the image or remove its line"],
    ),
    "truncated image": (
        lambda root: truncate(root / "JPEGImages/colour.jpg"),
        ["JPEGImages/colour.jpg: unreadable or truncated image", "Re-extract or re-download this file"],
    ),
    "not an image": (
        lambda root: (root / "more/grey.jpg").write_bytes(b"hello"),
        ["more/grey.jpg: unreadable or truncated image", "remove it from the list that names it"],
    ),
    "empty list": (_list("\n  \r\n"), ["ood_list.txt: the OoD list names no image", "set data.ood_root to null"]),
    "missing list": (
        lambda root: (root / DEFAULT_LIST).unlink(),
        ["ood_list.txt: OoD list not found", "one image path per line", "set data.ood_root to null"],
    ),
    "list not text": (
        lambda root: (root / DEFAULT_LIST).write_bytes(b"\xff\xfe\x00binary"),
        ["ood_list.txt: not a readable UTF-8 text file", "Point data.ood_list at the list"],
    ),
    "list is a folder": (
        lambda root: ((root / DEFAULT_LIST).unlink(), (root / DEFAULT_LIST).mkdir()),
        ["ood_list.txt: not a readable UTF-8 text file (", "Point data.ood_list at the list"],
    ),
    "path escaping the root": (
        _outside,
        ["ood_list.txt:2: '../outside.jpg' lies outside the OoD folder", "move or link the image into the folder"],
    ),
    "absolute path": (_list("/etc/hostname\n"), ["ood_list.txt:1: '/etc/hostname' lies outside the OoD folder"]),
    "path listed twice": (
        _list("more/grey.jpg\nJPEGImages/colour.jpg\n./more/grey.jpg\n"),
        ["ood_list.txt:3: './more/grey.jpg' is listed twice (first on line 1)", "Remove the duplicate line"],
    ),
    "missing root": (
        lambda root: root.rename(root.with_name("moved")),
        ["OoD: OoD folder not found", "Set data.ood_root to the folder of OoD images"],
    ),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_bad_ood_set_gives_a_specific_error(ood_root, name):
    corrupt, expected = MALFORMED[name]
    corrupt(ood_root)
    with pytest.raises(DataError, match=r"1 problem\(s\)") as info:
        check(ood_root)
    for text in expected:
        assert text in str(info.value), f"{text!r} not in {info.value}"


def test_every_problem_is_reported_at_once(ood_root):
    truncate(ood_root / "JPEGImages/cmyk.jpg")
    (ood_root / DEFAULT_LIST).write_text(
        "JPEGImages/colour.jpg\nJPEGImages/gone.jpg\n../up.jpg\nJPEGImages/cmyk.jpg\nJPEGImages/colour.jpg\n"
    )
    with pytest.raises(DataError, match=r"the OoD set \(.*ood_list.txt\) has 4 problem\(s\)") as info:
        check(ood_root)
    message = str(info.value)
    for text in ("gone.jpg: OoD image missing", "'../up.jpg' lies outside", "cmyk.jpg: unreadable", "listed twice"):
        assert text in message


def test_the_dataset_check_records_the_ood_set_or_stops_naming_its_file(voc_tree, ood_root, tmp_path):
    out = tmp_path / "results" / "dataset.json"
    command = [sys.executable, "-m", "icd", "validate-data", "--voc-root", str(voc_tree), "--out", str(out)]
    assert subprocess.run(command, capture_output=True).returncode == 0
    assert json.loads(out.read_text())["ood"] is None
    with_ood = [*command, "--ood-root", str(ood_root), "--ood-list", DEFAULT_LIST]
    assert subprocess.run(with_ood, capture_output=True).returncode == 0
    assert json.loads(out.read_text())["ood"] == check(ood_root)

    before = snapshot(tmp_path / "results")
    truncate(ood_root / "more/grey.jpg")
    result = subprocess.run(with_ood, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: the OoD set ({ood_root / DEFAULT_LIST}) has 1 problem(s)" in result.stderr
    assert "more/grey.jpg: unreadable or truncated image" in result.stderr
    assert snapshot(tmp_path / "results") == before


# ------------------------------------------------------------------------------------------------ planning

VOC = {
    "run": "voc",
    "data": {"source": "voc", "voc_root": "/data/VOC2012"},
    "pretrain": {"weights": "/weights/vgg16.pth"},
}


def test_the_generated_set_is_where_the_generator_writes_it():
    assert GENERATED_OOD == (synthetic.OOD_FOLDER, synthetic.OOD_LIST) and synthetic.OOD_LIST == DEFAULT_LIST


def test_the_run_reads_the_configured_or_generated_ood_set():
    default = load_config()
    root = f"results/{default['run']}/data/VOC2012/OoD"
    assert ood_set(default) == (root, "ood_list.txt") and ood_inputs(default) == []  # inside the generated folder
    assert dataset_check(default, {})["ood"] == f"--ood-root {root} --ood-list ood_list.txt"
    assert ood_set(load_config(overrides={"synthetic": {"num_ood": 0}})) is None
    own = load_config(overrides={"data": {"ood_root": "/data/my ood", "ood_list": "hard.txt"}})
    assert ood_set(own) == ("/data/my ood", "hard.txt") and ood_inputs(own) == ["/data/my ood/hard.txt"]
    voc = load_config(overrides=VOC)
    assert ood_set(voc) is None and ood_inputs(voc) == [] and dataset_check(voc, {})["ood"] == ""
    voc_ood = load_config(overrides={**VOC, "data": {**VOC["data"], "ood_root": "/data/ood"}})
    assert ood_inputs(voc_ood) == ["/data/ood/ood_list.txt"]
    assert dataset_check(voc_ood, {})["ood"] == "--ood-root /data/ood --ood-list ood_list.txt"


def test_a_run_without_ood_images_keeps_the_name_of_its_checked_report():
    """The check's name before OoD sets existed: the same settings without the `ood` key (nor the later `extra`). A
    run that does not use them keeps its accepted report, and nothing after it reruns; one that does gets another
    name."""
    voc = load_config(overrides=VOC)
    check = dataset_check(voc, {"width": 1.0, "batch_norm": False})
    before = {key: value for key, value in check.items() if key not in ("ood", "extra")}
    digest = hashlib.sha256(as_json(before).encode()).hexdigest()[:16]
    assert checked_dataset(voc, check) == f"results/voc/data/checked/{digest}.json"
    voc["data"]["ood_root"] = "/data/ood"
    assert checked_dataset(voc, dataset_check(voc, {"width": 1.0, "batch_norm": False})) != checked_dataset(voc, check)


def test_a_missing_ood_folder_or_list_fails_when_the_config_is_read(ood_root):
    for source in ({"source": "synthetic"}, VOC["data"] | {"voc_root": str(ood_root)}):
        config = load_config(overrides={**VOC, "data": {**source, "ood_root": str(ood_root)}})
        check_data_roots(config)  # an existing folder with its list passes, its images unread
        config["data"]["ood_list"] = "other.txt"
        with pytest.raises(ConfigError, match=r"at 'data.ood_list': the file .*OoD/other.txt does not exist.*relative"):
            check_data_roots(config)
        config["data"]["ood_root"] = str(ood_root / "nowhere")
        with pytest.raises(ConfigError, match=r"at 'data.ood_root': the folder .*nowhere does not exist.*null"):
            check_data_roots(config)


# ------------------------------------------------------------------------------------------------ workflow


def test_a_bad_ood_set_stops_the_run_in_the_dataset_check_and_a_new_list_reruns_it(ood_root, tmp_path):
    """The data stage of the tiny synthetic run, reading the user's OoD set: a truncated OoD image stops it in
    validate_data, naming the file; repaired, the set reaches dataset.json; a rewritten list reruns the check."""
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    config = {**TINY, "synthetic": {**TINY["synthetic"], "num_ood": 0}, "data": {"ood_root": str(ood_root)}}
    target = "results/tiny/data/dataset.json"
    image = ood_root / "JPEGImages/colour.jpg"
    original = image.read_bytes()
    truncate(image)
    failed = snakemake(workdir, "--cores", "1", target, config=config)
    message = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Error in rule validate_data" in message and "Traceback" not in message
    assert f"{image}: unreadable or truncated image" in message and "Re-extract or re-download" in message
    assert not (workdir / target).exists()

    image.write_bytes(original)
    passed = snakemake(workdir, "--cores", "1", target, config=config)
    assert passed.returncode == 0, (passed.stdout + passed.stderr)[-3000:]
    assert json.loads((workdir / target).read_text())["ood"] == check(ood_root)
    assert "Nothing to be done" in snakemake(workdir, "-n", target, config=config).stdout
    (ood_root / DEFAULT_LIST).write_text("JPEGImages/colour.jpg\n")
    dry = snakemake(workdir, "-n", target, config=config)
    assert dry.returncode == 0 and "rule validate_data:" in dry.stdout and "synthesize_data" not in dry.stdout
