"""Extra image-level-labelled images (data.extra): both layouts and their up-front check on hand-made folders, the
dataset check's `extra` entry and canvases, the generator's web-style set, and the workflow planning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import snapshot, truncate, write_annotation
from tests.scenarios import scenario
from tests.test_ood_data import VOC as VOC_CONFIG  # a VOC run's config, its paths never read
from tests.workflow_helpers import TINY, snakemake
from wsss.core.config import check_data_roots, load_config
from wsss.core.errors import ConfigError, DataError
from wsss.data import synthetic
from wsss.data.classes import VOC, ClassList
from wsss.data.extra import DEFAULT_LIST, ExtraImages, ExtraSet, validate_extra
from wsss.data.io import read_rgb, write_jpeg
from wsss.data.synthetic import generate_dataset
from wsss.workflow import GENERATED_EXTRA, checked_dataset, dataset_check, extra_inputs, extra_sets

# The hand-made list set: a colour JPEG, a grey one in a subfolder and a CMYK one, (H, W) each, with their classes.
IMAGES = {"colour.jpg": (30, 40), "sub/grey.jpg": (20, 24), "cmyk.jpg": (16, 12)}
LIST_TEXT = b"colour.jpg cat\r\n\r\n  sub/grey.jpg boat, car \r\ncmyk.jpg train"
LABELS = {"extra0/colour": [8], "extra0/sub/grey": [4, 7], "extra0/cmyk": [19]}  # VOC's indices, 1..20
# The hand-made VOC tree: (name, difficult) objects per id, as the main tree's annotations.
TREE = {"x2": [("dog", 0), ("person", 1)], "x1": [("cat", 0), ("cat", 0)]}


def _write_images(root: Path, images: dict[str, tuple[int, int]]) -> None:
    rng = np.random.default_rng(0)
    for relative, (height, width) in images.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if "grey" in relative:
            Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8), mode="L").save(path, format="JPEG")
        elif "cmyk" in relative:
            Image.new("CMYK", (width, height), color=(0, 200, 200, 0)).save(path, format="JPEG")
        else:
            write_jpeg(path, rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


@pytest.fixture
def list_root(tmp_path: Path) -> Path:
    """A folder in the list layout, its list with Windows line ends, a blank line, stray spaces, two classes."""
    root = tmp_path / "Web"
    _write_images(root, IMAGES)
    (root / DEFAULT_LIST).write_bytes(LIST_TEXT)
    return root


@pytest.fixture
def voc_root(tmp_path: Path) -> Path:
    """A VOC-layout tree of two images and their annotations (no split list)."""
    root = tmp_path / "Crawl"
    _write_images(root, {f"JPEGImages/{image_id}.jpg": (24, 32) for image_id in TREE})
    for image_id, objects in TREE.items():
        write_annotation(root / "Annotations" / f"{image_id}.xml", objects, (32, 24))
    return root


def check(*sets: ExtraSet, classes: ClassList = VOC, **keywords) -> dict:
    return validate_extra(list(sets), classes, progress=False, **keywords)


def test_a_list_set_is_read_in_order_with_its_labels_and_grey_and_cmyk_images_as_rgb(list_root):
    entry = check(ExtraSet(list_root))
    assert entry == {
        "sets": [{"root": str(list_root.absolute()), "layout": "list", "list": DEFAULT_LIST, "images": 3}],
        "ids": list(LABELS),
        "paths": dict(zip(LABELS, IMAGES, strict=True)),
        "set_of": dict.fromkeys(LABELS, 0),
        "labels": LABELS,
        "largest_side": 40,
    }
    images = ExtraImages.of_dataset({"extra": entry})
    assert len(images) == 3 and images.ids == tuple(LABELS) and images.labels == LABELS
    for image_id, (relative, (height, width)) in zip(LABELS, IMAGES.items(), strict=True):
        assert images.path(image_id) == list_root / relative
        assert read_rgb(images.path(image_id)).shape == (height, width, 3)
    grey = read_rgb(images.path("extra0/sub/grey")).astype(int)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert ExtraImages.of_dataset({"counts": {}}) is None and ExtraImages.of_dataset({"extra": None}) is None
    assert validate_extra([], VOC) is None


def test_class_names_are_the_datasets_own_and_may_hold_spaces(tmp_path):
    root = tmp_path / "Web"
    _write_images(root, {"a.jpg": (8, 8)})
    (root / "mine.txt").write_text("a.jpg traffic light,kiwi\n")
    entry = check(ExtraSet(root, "mine.txt"), classes=ClassList(("kiwi", "traffic light")))
    assert entry["labels"] == {"extra0/a": [1, 2]} and entry["sets"][0]["list"] == "mine.txt"


def test_a_voc_tree_is_read_whole_or_through_its_list_and_sets_keep_their_ids_apart(voc_root, list_root):
    whole = check(ExtraSet(voc_root))
    assert whole["sets"][0]["layout"] == "voc" and whole["sets"][0]["list"] is None
    assert whole["ids"] == ["extra0/JPEGImages/x1", "extra0/JPEGImages/x2"]  # sorted annotations
    assert whole["labels"] == {"extra0/JPEGImages/x1": [8], "extra0/JPEGImages/x2": [12]}  # difficult person dropped
    (voc_root / "ImageSets").mkdir()
    (voc_root / "ImageSets" / "few.txt").write_text("x2\n")
    listed = check(ExtraSet(list_root), ExtraSet(voc_root, "ImageSets/few.txt"))
    assert listed["ids"] == [*LABELS, "extra1/JPEGImages/x2"]
    assert [entry["images"] for entry in listed["sets"]] == [3, 1] and listed["sets"][1]["list"] == "ImageSets/few.txt"
    images = ExtraImages.of_dataset({"extra": listed})
    assert images.path("extra1/JPEGImages/x2") == voc_root / "JPEGImages" / "x2.jpg"
    assert images.path("extra0/colour") == list_root / "colour.jpg" and listed["set_of"]["extra1/JPEGImages/x2"] == 1


def _list(text: str):
    return lambda root: (root / DEFAULT_LIST).write_text(text)


TWO_OF_ONE_ID = "colour.jpg cat\ncolour.png dog\n"  # two files whose ids, without the suffix, are one


# Each malformation of the list set, and pieces of the message it must produce: the file (and line) and the fix.
LIST_PROBLEMS = {
    "missing image": (
        _list("colour.jpg cat\ngone.jpg dog\n"),
        ["gone.jpg: extra image missing (", "extra_list.txt:2)", "Add the image or remove its line from the list"],
    ),
    "truncated image": (
        lambda root: truncate(root / "colour.jpg"),
        ["colour.jpg: unreadable or truncated image", "Re-extract or re-download", "Named at ", "extra_list.txt:1."],
    ),
    "not an image": (
        lambda root: (root / "sub/grey.jpg").write_bytes(b"hello"),
        ["sub/grey.jpg: unreadable or truncated image", "extra_list.txt:3."],
    ),
    "no class": (
        _list("colour.jpg cat\ncmyk.jpg\n"),
        ["extra_list.txt:2: 'cmyk.jpg' names no class", "Write `<image path> <class>[,<class>...]`"],
    ),
    "unknown class": (
        _list("colour.jpg cat,dragon\n"),
        ["extra_list.txt:1: unknown class name(s) 'dragon'", "20 classes of data.classes: aeroplane, bicycle, bird"],
    ),
    "empty class name": (_list("colour.jpg cat,\n"), ["extra_list.txt:1: unknown class name(s) ''"]),
    "path escaping the root": (
        lambda root: (write_jpeg(root.parent / "up.jpg", np.zeros((8, 8, 3), np.uint8)), _list("../up.jpg cat")(root)),
        ["extra_list.txt:1: '../up.jpg' lies outside the extra image folder", "List paths relative to data.extra[0]"],
    ),
    "absolute path": (_list("/etc/hostname cat\n"), ["extra_list.txt:1: '/etc/hostname' lies outside"]),
    "path listed twice": (
        _list("colour.jpg cat\n./colour.jpg dog\n"),
        ["extra_list.txt:2: './colour.jpg' is listed twice (first on line 1)", "Remove the duplicate line"],
    ),
    "two paths of one id": (
        lambda root: (write_jpeg(root / "colour.png", np.zeros((8, 8, 3), np.uint8)), _list(TWO_OF_ONE_ID)(root)),
        ["extra_list.txt:2: 'colour.png' gives the id 'extra0/colour' of line 1's image", "Rename one"],
    ),
    "missing list": (
        lambda root: (root / DEFAULT_LIST).unlink(),
        ["extra_list.txt: extra image list not found", "or remove data.extra[0] from data.extra"],
    ),
    "list not text": (
        lambda root: (root / DEFAULT_LIST).write_bytes(b"\xff\xfe\x00binary"),
        ["extra_list.txt: not a readable UTF-8 text file", "Point data.extra[0].list at the list"],
    ),
    "missing root": (
        lambda root: root.rename(root.with_name("moved")),
        ["Web: extra image folder not found", "Set data.extra[0].root to the folder"],
    ),
    "empty set": (
        _list("\n  \r\n"),
        ["Web: the extra set holds no image (", "extra_list.txt names none)", "remove data.extra[0] (root "],
    ),
}


@pytest.mark.parametrize("name", sorted(LIST_PROBLEMS))
def test_a_bad_list_set_gives_a_specific_error(list_root, name):
    corrupt, expected = LIST_PROBLEMS[name]
    corrupt(list_root)
    with pytest.raises(DataError, match=r"the extra images \(data.extra\) has 1 problem\(s\)") as info:
        check(ExtraSet(list_root))
    for text in expected:
        assert text in str(info.value), f"{text!r} not in {info.value}"


def _id_list(text: str):
    def write(root: Path) -> None:
        (root / "ids.txt").write_text(text)

    return write


# The same for the VOC tree, read through an id list `ids.txt` where the corruption writes one.
TREE_PROBLEMS = {
    "unknown class in an annotation": (
        lambda root: write_annotation(root / "Annotations" / "x1.xml", [("dragon", 0)]),
        ["Annotations/x1.xml: unknown class name 'dragon'", "one of the 20 classes of data.classes"],
    ),
    "annotation without object": (
        lambda root: write_annotation(root / "Annotations" / "x1.xml", []),
        ["Annotations/x1.xml: no object", "Add its objects or remove its annotation and image"],
    ),
    "missing image": (
        lambda root: (root / "JPEGImages" / "x2.jpg").unlink(),
        ["JPEGImages/x2.jpg: extra image missing (", "Annotations/x2.xml)", "remove its annotation and image"],
    ),
    "listed id without annotation": (
        _id_list("x1\nx3\n"),
        ["Annotations/x3.xml: annotation missing (", "ids.txt:2)", "Add the XML or remove its id from the list"],
    ),
    "id listed twice": (_id_list("x1\nx2\nx1\n"), ["ids.txt:3: 'x1' is listed twice (first on line 1)"]),
    "not an id": (_id_list("x1 1\n"), ["ids.txt:1: 'x1 1' is not an image id", "one id per line"]),
    "id leading outside": (_id_list("../x1\n"), ["ids.txt:1: '../x1' lies outside the image folder"]),
    "empty id list": (_id_list("\n"), ["Crawl: the extra set holds no image (", "ids.txt names none)"]),
}


@pytest.mark.parametrize("name", sorted(TREE_PROBLEMS))
def test_a_bad_voc_tree_gives_a_specific_error(voc_root, name):
    corrupt, expected = TREE_PROBLEMS[name]
    corrupt(voc_root)
    extra = ExtraSet(voc_root, "ids.txt" if (voc_root / "ids.txt").exists() else None)
    with pytest.raises(DataError, match=r"has 1 problem\(s\)") as info:
        check(extra)
    for text in expected:
        assert text in str(info.value), f"{text!r} not in {info.value}"


def test_every_problem_of_every_set_is_reported_at_once(list_root, voc_root):
    truncate(list_root / "cmyk.jpg")
    (list_root / DEFAULT_LIST).write_text("colour.jpg cat\ngone.jpg dog\n../up.jpg cat\ncmyk.jpg train\nsub/grey.jpg\n")
    write_annotation(voc_root / "Annotations" / "x2.xml", [("dragon", 0)])
    with pytest.raises(DataError, match=r"the extra images \(data.extra\) has 5 problem\(s\)") as info:
        check(ExtraSet(list_root), ExtraSet(voc_root))
    message = str(info.value)
    for text in ("gone.jpg: extra image missing", "'../up.jpg' lies outside", "cmyk.jpg: unreadable", "names no class"):
        assert text in message
    assert "x2.xml: unknown class name 'dragon'" in message


def test_an_explicit_canvas_must_hold_the_extra_images(list_root):
    assert check(ExtraSet(list_root), canvases={"seeds.inference_size": 40})["largest_side"] == 40
    with pytest.raises(DataError, match=r"1 problem") as info:
        check(ExtraSet(list_root), canvases={"seeds.inference_size": 33})
    assert f"{list_root / 'colour.jpg'}: image side of 40 px is larger than seeds.inference_size 33" in str(info.value)


def test_the_dataset_check_records_the_extra_sets_and_counts_them_for_the_canvases(voc_tree, list_root, tmp_path):
    """The hand-made VOC tree's images are 40 x 30; one extra image of 50 px makes the derived canvases hold it, an
    explicit canvas it does not fit in stops the check naming it, and a bad extra image stops it naming the file."""
    _write_images(list_root, {"wide.jpg": (20, 50)})
    (list_root / DEFAULT_LIST).write_bytes(LIST_TEXT + b"\nwide.jpg dog\n")
    out = tmp_path / "results" / "dataset.json"
    command = [sys.executable, "-m", "icd", "validate-data", "--voc-root", str(voc_tree), "--out", str(out)]
    with_extra = [*command, "--extra", json.dumps([{"root": str(list_root), "list": None}])]
    result = subprocess.run(with_extra, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["extra"] == check(ExtraSet(list_root)) and report["largest_side"] == 50
    assert "extra images: {" in result.stderr and ": 4}" in result.stderr

    before = snapshot(tmp_path / "results")
    small_canvas = subprocess.run(
        [*with_extra, "--canvases", '{"seeds.inference_size": 45}'], capture_output=True, text=True
    )
    assert small_canvas.returncode == 2 and "Traceback" not in small_canvas.stderr
    assert (
        f"{list_root / 'wide.jpg'}: image side of 50 px is larger than seeds.inference_size 45" in small_canvas.stderr
    )
    truncate(list_root / "colour.jpg")
    bad = subprocess.run(with_extra, capture_output=True, text=True)
    assert bad.returncode == 2 and "error: the extra images (data.extra) has 1 problem(s)" in bad.stderr
    assert f"{list_root / 'colour.jpg'}: unreadable or truncated image" in bad.stderr
    assert snapshot(tmp_path / "results") == before


# ------------------------------------------------------------------------------------------------ generated set

SMALL = {**scenario("synthetic_small")["synthetic"], "progress": False}


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_the_generated_set_is_valid_and_has_statistics_of_its_own(tmp_path):
    """One class per image, drawn uniformly; the context classes' cues at about half the dataset's rate (0.7 here)."""
    root = tmp_path / "VOC2012"
    sizes = {"num_train": 2, "num_val": 1, "num_test": 1, "num_ood": 0, "min_size": 48, "max_size": 64}
    stats = generate_dataset(root, **dict(SMALL, **sizes, num_extra=150, saliency=False))
    extra = ExtraSet(root / synthetic.EXTRA_FOLDER, synthetic.EXTRA_LIST)
    entry = check(extra)
    assert entry["ids"] == [f"extra0/JPEGImages/extra_{number:06d}" for number in range(1, 151)]
    assert all(len(labels) == 1 for labels in entry["labels"].values())
    counts = {
        name: sum(labels == [VOC.index(name)] for labels in entry["labels"].values()) for name in SMALL["classes"]
    }
    assert stats["extra"]["images"] == 150 and stats["extra"]["class_images"] == counts
    assert all(15 <= count <= 45 for count in counts.values())  # 30 each on average
    assert set(stats["extra"]["context_fraction"]) == set(SMALL["context_classes"])
    assert all(0.1 <= fraction <= 0.6 for fraction in stats["extra"]["context_fraction"].values())  # 0.35 on average
    assert entry["largest_side"] <= 64  # the dataset's sizes: the derived canvases stay the same


def test_the_extra_set_changes_no_dataset_file_and_its_images_not_with_its_size(tmp_path):
    with_extra, without, fewer = (tmp_path / name for name in ("with", "without", "fewer"))
    stats = generate_dataset(with_extra, **SMALL)
    stats_without = generate_dataset(without, **dict(SMALL, num_extra=0))
    assert not (without / "Extra").exists() and stats_without["extra"]["images"] == 0
    assert {**stats_without, "extra": stats["extra"]} == stats
    files = _files(with_extra)
    assert _files(without) == {path: data for path, data in files.items() if not path.startswith("Extra/")}
    listed = (with_extra / "Extra" / "extra_list.txt").read_text().splitlines()
    assert len(listed) == SMALL["num_extra"] and all(len(line.split()) == 2 for line in listed)

    generate_dataset(fewer, **dict(SMALL, num_extra=3))
    assert (fewer / "Extra" / "extra_list.txt").read_text().splitlines() == listed[:3]
    assert {name: data for name, data in _files(fewer).items() if name.startswith("Extra/JPEGImages")} == {
        f"Extra/{line.split()[0]}": files[f"Extra/{line.split()[0]}"] for line in listed[:3]
    }


def test_a_negative_extra_count_is_named(tmp_path):
    with pytest.raises(ValueError, match="num_extra"):
        generate_dataset(tmp_path / "VOC2012", **dict(SMALL, num_extra=-1))


# ------------------------------------------------------------------------------------------------ planning


def test_the_generated_set_is_where_the_generator_writes_it():
    assert GENERATED_EXTRA == (synthetic.EXTRA_FOLDER, synthetic.EXTRA_LIST) and synthetic.EXTRA_LIST == DEFAULT_LIST


def test_the_run_reads_the_configured_or_generated_extra_sets(list_root, voc_root):
    with_extra = load_config(overrides={"synthetic": {"num_extra": 200}})
    generated = [{"root": f"results/{with_extra['run']}/data/VOC2012/Extra", "list": "extra_list.txt"}]
    assert extra_sets(with_extra) == generated and extra_inputs(with_extra) == []  # inside the generated folder
    assert dataset_check(with_extra, {})["extra"] == f"--extra '{json.dumps(generated, sort_keys=True)}'"
    assert extra_sets(load_config()) == []  # the default run's config.yaml: num_extra 0
    voc = load_config(overrides=VOC_CONFIG)
    assert extra_sets(voc) == [] and extra_inputs(voc) == [] and dataset_check(voc, {})["extra"] == ""
    own = [{"root": str(list_root)}, {"root": str(voc_root)}, {"root": str(voc_root), "list": "ids.txt"}]
    config = load_config(overrides={"data": {"extra": own}})
    assert extra_sets(config) == [{**entry, "list": entry.get("list")} for entry in own]  # the user's only
    assert extra_inputs(config) == [
        str(list_root / DEFAULT_LIST),
        str(voc_root / "Annotations"),  # a VOC tree read whole: its annotations' folder, never its images'
        str(voc_root / "ids.txt"),
    ]


def test_a_run_without_extra_images_keeps_the_name_of_its_checked_report(list_root):
    """An empty setting stays out of the check's name: a run without extra images keeps the name it had before they
    existed, and its accepted report; one with them gets another name."""
    voc = load_config(overrides=VOC_CONFIG)
    check = dataset_check(voc, {})
    assert checked_dataset(voc, check) == checked_dataset(voc, {k: v for k, v in check.items() if k != "extra"})
    voc["data"]["extra"] = [{"root": str(list_root), "list": None}]
    assert checked_dataset(voc, dataset_check(voc, {})) != checked_dataset(voc, check)


def test_a_missing_extra_folder_or_list_fails_when_the_config_is_read(list_root, voc_root):
    config = load_config(overrides={**VOC_CONFIG, "data": {**VOC_CONFIG["data"], "voc_root": str(voc_root)}})
    config["data"]["extra"] = [{"root": str(voc_root), "list": None}, {"root": str(list_root), "list": None}]
    check_data_roots(config)  # existing folders with their lists pass, their images unread
    config["data"]["extra"][1]["list"] = "other.txt"
    with pytest.raises(ConfigError, match=r"at 'data.extra\[1\].list': the file .*Web/other.txt does not exist"):
        check_data_roots(config)
    config["data"]["extra"][0]["root"] = str(voc_root / "nowhere")
    with pytest.raises(ConfigError, match=r"at 'data.extra\[0\].root': the folder .*nowhere does not exist.*remove"):
        check_data_roots(config)


def test_a_dry_run_plans_the_dataset_check_on_the_users_list(list_root, tmp_path):
    config = {**TINY, "data": {"extra": [{"root": str(list_root)}]}}
    dry = snakemake(tmp_path, "-n", "results/tiny/data/dataset.json", config=config)
    assert dry.returncode == 0, (dry.stdout + dry.stderr)[-3000:]
    job = dry.stdout[dry.stdout.index("rule validate_data:") :]
    assert str(list_root / DEFAULT_LIST) in job.split("output:")[0]  # an input, so a new list reruns the check
    assert f"""--extra '[{{"list": null, "root": "{list_root}"}}]'""" in job
