"""The synthetic VOC generator: exact VOC layout, determinism, atomicity and the weak-supervision premise."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from skimage.color import rgb2hsv

from tests.conftest import split_ids
from tests.scenarios import scenario
from wsss.data import synthetic
from wsss.data.classes import IGNORE_LABEL, PALETTE, VOC_CLASSES, class_index
from wsss.data.io import read_grey, read_rgb
from wsss.data.synthetic import PRETEXT_CLASSES, generate_dataset, pretext_images

# tests/scenarios/synthetic_small.yaml: a dozen images of 80-112 px, every generator setting written out.
SMALL = {**scenario("synthetic_small")["synthetic"], "progress": False}
SPLITS = ("train_aug", "train", "val", "test", "trainval")  # every list the generator writes


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "VOC2012"
    stats = generate_dataset(root, **SMALL)
    return root, stats


def _objects(root: Path, image_id: str) -> tuple[ET.Element, list[dict]]:
    tree = ET.parse(root / "Annotations" / f"{image_id}.xml").getroot()
    objects = [
        {
            "name": obj.findtext("name"),
            "difficult": int(obj.findtext("difficult")),
            "box": [int(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")],
        }
        for obj in tree.iter("object")
    ]
    return tree, objects


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "P"
        assert image.getpalette()[: 256 * 3] == PALETTE.reshape(-1).tolist()
        return np.asarray(image)


def test_layout_lists(dataset):
    root, stats = dataset
    train_aug, train, val, test, trainval = (split_ids(root, split) for split in SPLITS)
    assert len(train_aug) == 12 and len(val) == 6 and len(test) == 4
    assert train == train_aug[: round(0.25 * 12)] and set(train) < set(train_aug)
    assert trainval == sorted(train + val)
    for ids in (train_aug, train, val, test):
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert train_aug[0] == "train_000001" and val[0] == "val_000001" and test[0] == "test_000001"
    assert stats["images"] == {"train_aug": 12, "train": 3, "val": 6, "test": 4}


def test_layout_files(dataset):
    root, _ = dataset
    train_aug, _train, val, test, segmented = (split_ids(root, split) for split in SPLITS)
    everything = train_aug + val + test

    def names(folder: str) -> set[str]:
        return {p.stem for p in (root / folder).iterdir()}

    assert names("JPEGImages") == set(everything)
    assert names("Saliency") == set(everything)
    assert names("Annotations") == set(train_aug + val)
    assert names("SegmentationClassAug") == set(train_aug + val)
    assert names("SegmentationClass") == set(segmented)
    assert names("ContextMasks") == set(train_aug + val)
    ood = [f"JPEGImages/ood_{number:06d}.jpg" for number in range(1, SMALL["num_ood"] + 1)]
    assert (root / "OoD" / "ood_list.txt").read_text() == "".join(f"{name}\n" for name in ood)  # W-OoD's list
    ood_files = sorted(str(p.relative_to(root / "OoD")) for p in (root / "OoD").rglob("*") if p.is_file())
    assert ood_files == sorted([*ood, "ood_list.txt"])
    assert not any(p.name.startswith(".") for p in root.rglob("*")), "temporary files left behind"


def test_masks_match_images(dataset):
    root, _ = dataset
    allowed = {0, IGNORE_LABEL} | {class_index(c) for c in SMALL["classes"]}
    shapes = []
    for path in sorted((root / "SegmentationClassAug").iterdir()):
        mask = _mask(path)
        rgb = read_rgb(root / "JPEGImages" / f"{path.stem}.jpg")
        assert mask.shape == rgb.shape[:2]
        values = set(np.unique(mask).tolist())
        assert values <= allowed and IGNORE_LABEL in values and len(values - {0, IGNORE_LABEL}) >= 1
        shapes.append(mask.shape)
        if (root / "SegmentationClass" / path.name).exists():
            assert (root / "SegmentationClass" / path.name).read_bytes() == path.read_bytes()
    assert all(80 <= s <= 112 for shape in shapes for s in shape)
    assert sum(h != w for h, w in shapes) >= len(shapes) // 2, "non-square images must be common"


def test_xml_matches_masks(dataset):
    root, _ = dataset
    ids = split_ids(root, "train_aug") + split_ids(root, "val")
    difficult = 0
    for image_id in ids:
        tree, objects = _objects(root, image_id)
        mask = _mask(root / "SegmentationClassAug" / f"{image_id}.png")
        h, w = mask.shape
        assert tree.findtext("filename") == f"{image_id}.jpg"
        assert (int(tree.findtext("size/width")), int(tree.findtext("size/height"))) == (w, h)
        assert tree.findtext("size/depth") == "3"
        assert 1 <= len(objects) <= 3
        assert any(o["difficult"] == 0 for o in objects), "every image needs a labelled object"
        difficult += sum(o["difficult"] for o in objects)
        present = {VOC_CLASSES[v] for v in np.unique(mask) if v not in (0, IGNORE_LABEL)}
        assert {o["name"] for o in objects} == present  # difficult objects are still in the mask
        for name in present:
            boxes = np.array([o["box"] for o in objects if o["name"] == name])
            assert (boxes[:, :2] >= 1).all() and (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            ys, xs = np.nonzero(mask == class_index(name))
            extent = np.array([xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1])
            union = np.r_[boxes[:, :2].min(0), boxes[:, 2:].max(0)]
            assert np.abs(union - extent).max() <= SMALL["boundary_width"], (image_id, name, union, extent)
    assert difficult > 0


def test_ignore_band_straddles_boundaries(dataset):
    root, _ = dataset
    mask = _mask(root / "SegmentationClassAug" / "train_000001.png")
    ignore = mask == IGNORE_LABEL
    foreground = (mask != 0) & ~ignore
    # every foreground pixel touching background crosses the band: no direct fg/bg contact
    assert not (foreground[:, 1:] & (mask[:, :-1] == 0)).any() and not (foreground[1:] & (mask[:-1] == 0)).any()
    assert 0.02 < ignore.mean() < 0.3


def test_saliency_marks_foreground(dataset):
    root, _ = dataset
    for image_id in split_ids(root, "val"):
        saliency = read_grey(root / "Saliency" / f"{image_id}.png")
        mask = _mask(root / "SegmentationClassAug" / f"{image_id}.png")
        assert saliency.shape == mask.shape
        fg, bg = (mask != 0) & (mask != IGNORE_LABEL), mask == 0
        assert saliency[fg].mean() > saliency[bg].mean() + 0.4


def test_premise_parts_are_small_coloured_and_class_specific(dataset):
    root, stats = dataset
    assert abs(stats["part_fraction"] - SMALL["part_fraction"]) <= 0.05
    assert abs(stats["part_fraction_unoccluded"] - SMALL["part_fraction"]) <= 0.02
    # measured on the files: saturated pixels are the parts, the rest of an object is grey body
    part_colours, body_colours, saturated_share = {}, {}, []
    for image_id in split_ids(root, "train_aug"):
        rgb = read_rgb(root / "JPEGImages" / f"{image_id}.jpg").astype(np.float32)
        mask = _mask(root / "SegmentationClassAug" / f"{image_id}.png")
        saturated = rgb.max(2) - rgb.min(2) > 100
        for name in SMALL["classes"]:
            region = mask == class_index(name)
            if region.any():
                saturated_share.append(saturated[region].mean())
                part_colours.setdefault(name, []).append(rgb[region & saturated].mean(0))
                body = rgb[region & ~saturated]
                assert abs(body.mean() - 128) < 25 and body.std() > 20  # textured mid grey
                body_colours.setdefault(name, []).append(body.mean(0))
    assert abs(np.mean(saturated_share) - SMALL["part_fraction"]) < 0.06
    means = {name: np.mean(colours, axis=0) for name, colours in part_colours.items()}
    assert len(means) >= 4
    for a in means:
        for b in means:
            if a < b:
                assert np.linalg.norm(means[a] - means[b]) > 80, (a, b)
    # the body is tinted towards its part's hue: class-specific everywhere, far less than the part
    for name, colours in body_colours.items():
        tint = np.mean(colours, axis=0) - np.mean(colours)
        part = means[name] - means[name].mean()
        assert tint @ part / (np.linalg.norm(tint) * np.linalg.norm(part)) > 0.9, name
        assert 0.1 * np.linalg.norm(part) < np.linalg.norm(tint) < 0.3 * np.linalg.norm(part), name


def test_untinted_bodies_are_grey(tmp_path):
    generate_dataset(tmp_path / "VOC2012", **dict(SMALL, num_train=6, num_val=2, num_test=1, body_tint=0.0))
    root = tmp_path / "VOC2012"
    for image_id in split_ids(root, "train_aug"):
        rgb = read_rgb(root / "JPEGImages" / f"{image_id}.jpg").astype(np.float32)
        mask = _mask(root / "SegmentationClassAug" / f"{image_id}.png")
        body = (mask != 0) & (mask != IGNORE_LABEL) & (rgb.max(2) - rgb.min(2) < 100)
        assert np.abs(rgb[body].mean(0) - rgb[body].mean()).max() < 4  # equal channels up to JPEG and noise


def test_stats_and_class_mix(tmp_path):
    kwargs = dict(SMALL, num_train=60, num_val=20, num_test=1, saliency=False, context_probability=1.0)
    stats = generate_dataset(tmp_path / "VOC2012", **kwargs)
    root = tmp_path / "VOC2012"
    ids = split_ids(root, "train_aug") + split_ids(root, "val")
    counts = [len(_objects(root, i)[1]) for i in ids]
    single = [len({o["name"] for o in _objects(root, i)[1]}) == 1 for i in ids]
    assert min(counts) >= 1 and max(counts) <= 3
    assert stats["objects_per_image"]["histogram"] == {str(k): counts.count(k) for k in sorted(set(counts))}
    assert stats["objects_per_image"]["mean"] == pytest.approx(np.mean(counts))
    assert stats["single_class_fraction"] == pytest.approx(np.mean(single))
    assert 0.4 <= stats["single_class_fraction"] <= 0.8
    assert 0.08 < stats["foreground_fraction"] < 0.4
    assert stats["context_fraction"] == {"boat": 1.0, "train": 1.0}
    assert sum(stats["class_images"].values()) >= len(ids)
    assert not (root / "Saliency").exists()
    # The context masks hold every cue the stats count: at context_probability 1 each image of a context class
    # shows that class's cue (rails across the image, water under it: objects never hide all of either).
    contexts = {image_id: _mask(root / "ContextMasks" / f"{image_id}.png") for image_id in ids}
    assert stats["context_pixel_fraction"] == pytest.approx(np.mean([(m > 0).mean() for m in contexts.values()]))
    for image_id, context in contexts.items():
        for name in {o["name"] for o in _objects(root, image_id)[1]} & set(SMALL["context_classes"]):
            assert (context == class_index(name)).any(), (image_id, name)


def test_context_masks_mark_cues_in_the_background_only(dataset):
    root, _ = dataset
    context_labels = {class_index(name) for name in SMALL["context_classes"]}
    shown = 0
    for image_id in split_ids(root, "train_aug") + split_ids(root, "val"):
        context = _mask(root / "ContextMasks" / f"{image_id}.png")
        truth = _mask(root / "SegmentationClassAug" / f"{image_id}.png")
        assert context.shape == truth.shape
        assert set(np.unique(context).tolist()) <= {0} | context_labels
        # never on an object: background, or the ignore band that straddles an object's boundary
        assert np.isin(truth[context > 0], [0, IGNORE_LABEL]).all(), image_id
        shown += context.any()
    assert shown >= 3


# The look of each class's cue (wsss.data.synthetic's painters) as the medians (hue, saturation, value) of the pixels
# a context mask gives that class: a mask that marked other pixels, or another cue's, would miss it.
CUE_LOOKS = {
    "boat": lambda h, s, v: 0.5 <= h <= 0.67 and s >= 0.3,  # water: blue
    "aeroplane": lambda h, s, v: 0.5 <= h <= 0.67 and v >= 0.6,  # sky: light blue
    "car": lambda h, s, v: s <= 0.2 and v <= 0.5,  # road: dark grey
    "cow": lambda h, s, v: 0.2 <= h <= 0.4 and s >= 0.3,  # grass: green
    "cat": lambda h, s, v: 0.03 <= h <= 0.13 and s >= 0.3,  # floor: brown wood
    "train": lambda h, s, v: v <= 0.45,  # rails: dark rails over dark ties
}


def test_context_masks_give_each_cue_its_class(tmp_path):
    """Every cue kind painted (later ones over earlier ones), each read back under its class's label."""
    classes = list(CUE_LOOKS)
    root = tmp_path / "VOC2012"
    options = dict(SMALL, classes=classes, context_classes=classes, context_probability=1.0)
    generate_dataset(root, **dict(options, num_train=30, num_val=2, num_test=1, num_ood=0, saliency=False))
    seen = set()
    for image_id in split_ids(root, "train_aug") + split_ids(root, "val"):
        context = _mask(root / "ContextMasks" / f"{image_id}.png")
        hsv = rgb2hsv(read_rgb(root / "JPEGImages" / f"{image_id}.jpg"))
        for name, look in CUE_LOOKS.items():
            marked = context == class_index(name)
            if marked.sum() >= 30:  # enough of the cue left visible for its medians to tell
                assert look(*np.median(hsv[marked], axis=0)), (image_id, name)
                seen.add(name)
    assert seen == set(CUE_LOOKS)


def _largest_patch(found: np.ndarray) -> int:
    """Pixels in the largest 8-connected patch of `found`."""
    labels, _ = ndimage.label(found, structure=np.ones((3, 3)))
    return int(np.bincount(labels.ravel())[1:].max(initial=0))


def _part_like(rgb: np.ndarray) -> int:
    """The largest patch with a part's look: saturation and value near the parts' 0.9 and 0.95 (every class hue),
    which no background, cue or distractor reaches."""
    hsv = rgb2hsv(rgb)
    return _largest_patch((hsv[..., 1] >= 0.7) & (hsv[..., 2] >= 0.75))


def _body_like(rgb: np.ndarray) -> int:
    """The largest patch with a body's look: the 2-px checkerboard of +-35 grey levels objects are painted with
    (pixels 2 apart across or down differ, 2 apart diagonally agree), gaps between detections closed."""
    grey = rgb.astype(np.float32).mean(axis=2)
    across, down, diagonal = (grey[:-2, :-2] - shifted for shifted in (grey[:-2, 2:], grey[2:, :-2], grey[2:, 2:]))
    found = (np.abs(across) > 35) & (np.abs(down) > 35) & (np.abs(diagonal) < 25)
    return _largest_patch(ndimage.binary_closing(found, iterations=2))


@pytest.mark.parametrize("context_classes", [SMALL["context_classes"], []], ids=["context classes", "none"])
def test_ood_images_show_cues_and_no_class_object(tmp_path, context_classes):
    """Every object is found by its part and its body in the dataset's images; nothing of either in an OoD image.
    Without context classes the cues come from every class's kind."""
    root = tmp_path / "VOC2012"
    stats = generate_dataset(root, **dict(SMALL, context_classes=context_classes, num_ood=40))
    for image_id in split_ids(root, "train_aug") + split_ids(root, "val"):
        rgb = read_rgb(root / "JPEGImages" / f"{image_id}.jpg")
        assert _part_like(rgb) >= 30 and _body_like(rgb) >= 200, image_id
    names = (root / "OoD" / "ood_list.txt").read_text().split()
    for name in names:
        rgb = read_rgb(root / "OoD" / name)
        assert all(SMALL["min_size"] <= side <= SMALL["max_size"] for side in rgb.shape[:2])
        assert _part_like(rgb) < 5 and _body_like(rgb) < 60, name
    kinds = {"water", "rails"} if context_classes else {"sky", "water", "road", "floor", "rails"}
    assert stats["ood"]["images"] == len(names) == 40
    assert set(stats["ood"]["contexts"]) == kinds  # at least one cue per image, sometimes two of different kinds
    assert len(names) < sum(stats["ood"]["contexts"].values()) < 2 * len(names)


def test_the_ood_set_changes_no_dataset_file_and_its_images_not_with_its_size(tmp_path, dataset):
    root, stats = dataset

    def dataset_files(folder: Path) -> dict[str, bytes]:
        return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    without = tmp_path / "without"
    stats_without = generate_dataset(without, **dict(SMALL, num_ood=0))
    assert not (without / "OoD").exists() and stats_without["ood"] == {"images": 0, "contexts": {}}
    assert {**stats_without, "ood": stats["ood"]} == stats
    with_ood = dataset_files(root)
    assert dataset_files(without) == {path: data for path, data in with_ood.items() if not path.startswith("OoD/")}

    fewer = tmp_path / "fewer"
    generate_dataset(fewer, **dict(SMALL, num_ood=3))
    listed = (fewer / "OoD" / "ood_list.txt").read_text().splitlines()
    assert listed == (root / "OoD" / "ood_list.txt").read_text().splitlines()[:3]
    assert {name: (fewer / "OoD" / name).read_bytes() for name in listed} == {
        name: with_ood[f"OoD/{name}"] for name in listed
    }


def test_same_seed_same_bytes_other_seed_other_images(tmp_path, dataset):
    root, _ = dataset
    again = tmp_path / "again"
    generate_dataset(again, **SMALL)
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for relative in files:
        assert (root / relative).read_bytes() == (again / relative).read_bytes(), relative

    other = tmp_path / "other"
    generate_dataset(other, **dict(SMALL, seed=SMALL["seed"] + 1))
    jpegs = sorted((root / "JPEGImages").iterdir())
    assert all(p.read_bytes() != (other / "JPEGImages" / p.name).read_bytes() for p in jpegs)


def test_images_do_not_depend_on_split_sizes(tmp_path, dataset):
    root, _ = dataset
    fewer = tmp_path / "fewer"
    generate_dataset(fewer, **dict(SMALL, num_train=5, num_val=2, num_test=1))
    for path in sorted((fewer / "JPEGImages").iterdir()):
        assert path.read_bytes() == (root / "JPEGImages" / path.name).read_bytes()


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = synthetic.write_jpeg

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "write_jpeg", failing)
    root = tmp_path / "VOC2012"
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(root, **SMALL)
    assert not root.exists() and list(tmp_path.iterdir()) == []

    root.mkdir()
    (root / "marker.txt").write_text("previous run")
    calls.clear()
    with pytest.raises(RuntimeError, match="disk full"):
        generate_dataset(root, **SMALL)
    assert [p.name for p in root.iterdir()] == ["marker.txt"]
    assert (root / "marker.txt").read_text() == "previous run"
    assert [p.name for p in tmp_path.iterdir()] == ["VOC2012"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["aeroplane", "dragon"]}, "dragon"),
        ({"classes": ["aeroplane", "background"]}, "background"),
        ({"context_classes": ["dog"]}, "dog"),
        ({"objects_per_image": [3, 1]}, "objects_per_image"),
        ({"num_ood": -1}, "num_ood"),
    ],
)
def test_bad_options_are_named(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path / "VOC2012", **dict(SMALL, **change))
    assert not (tmp_path / "VOC2012").exists()


def test_pretext_images():
    images, labels = pretext_images(seed=5, n=300, size=48)
    assert images.shape == (300, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (300,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(PRETEXT_CLASSES)
    assert len(set(labels.tolist())) == len(PRETEXT_CLASSES) == len(set(PRETEXT_CLASSES))
    assert all("/" in name for name in PRETEXT_CLASSES)
    again, labels_again = pretext_images(seed=5, n=300, size=48)
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    other, _ = pretext_images(seed=6, n=300, size=48)
    assert not np.array_equal(images, other)
    assert images.std(axis=(1, 2, 3)).min() > 5  # every image shows something


def test_pretext_is_fast():
    import time

    start = time.perf_counter()
    pretext_images(seed=0, n=1000, size=96)
    assert time.perf_counter() - start < 10
