"""Shared fixtures: a tiny hand-made VOC tree, independent of the synthetic generator; reading a VOC tree's split
lists and damaging its files, for the tests of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.data.io import write_grey, write_jpeg, write_mask

ICD_TEST_WIDTH = 0.0625  # the channel multiplier of the ICD networks the tests train (tests/test_train.py)


def write_annotation(path: Path, objects: list[tuple[str, int]], size=(40, 30)) -> None:
    """A VOC XML annotation with (name, difficult) objects."""
    body = "".join(
        f"<object><name>{name}</name><difficult>{difficult}</difficult>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        for name, difficult in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{path.stem}.jpg</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{body}</annotation>"
    )


def make_voc_tree(root: Path, *, height: int = 30, width: int = 40) -> Path:
    """A minimal but complete VOC + SBD layout: 3 train_aug ids (1 in train), 2 val, 1 test, saliency."""
    rng = np.random.default_rng(0)
    splits = {"train_aug": ["a1", "a2", "a3"], "train": ["a1"], "val": ["v1", "v2"], "test": ["t1"]}
    labels = {
        "a1": [("cat", 0)],
        "a2": [("dog", 0), ("person", 1)],
        "a3": [("train", 0), ("boat", 0)],
        "v1": [("car", 0)],
        "v2": [("bird", 0)],
    }
    for image_id in sorted({i for ids in splits.values() for i in ids}):
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        write_grey(root / "Saliency" / f"{image_id}.png", rng.random((height, width)))
        if image_id in labels:
            write_annotation(root / "Annotations" / f"{image_id}.xml", labels[image_id], (width, height))
            mask = np.zeros((height, width), np.uint8)
            mask[5:15, 5:20] = 8
            mask[4, 5:20] = 255
            write_mask(root / "SegmentationClass" / f"{image_id}.png", mask)
            write_mask(root / "SegmentationClassAug" / f"{image_id}.png", mask)
    for split, ids in splits.items():
        path = split_list(root, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in ids))
    return root


def split_list(root: Path, split: str) -> Path:
    """A split's id list in a VOC tree: train_aug's is SBD's (ImageSets/SegmentationAug), the others VOC's."""
    return root / "ImageSets" / ("SegmentationAug" if split == "train_aug" else "Segmentation") / f"{split}.txt"


def split_ids(root: Path, split: str) -> list[str]:
    """The ids a split's list holds, in its order."""
    return split_list(root, split).read_text().split()


def truncate(path: Path) -> None:
    """Cut a file to its first half: an image that cannot be decoded."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def resize_png(path: Path) -> None:
    """Halve a PNG's width: a mask or map of another size than its image."""
    with Image.open(path) as image:
        image.resize((image.width // 2, image.height)).save(path)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one thread is faster and immune to a busy machine's other processes."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def voc_tree(tmp_path: Path) -> Path:
    return make_voc_tree(tmp_path / "VOC2012")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes under root, to prove a failed step left existing results untouched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def png_mode():
    def mode(path: Path) -> str:
        with Image.open(path) as image:
            return image.mode

    return mode


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """A workdir holding the whole TINY pipeline's results, built once per session.

    Shared by every module: tests may dry-run, render reports or add files there, but must not
    delete or rewrite results (copy it first to do that).
    """
    from tests.workflow_helpers import snakemake

    workdir = tmp_path_factory.mktemp("workflow")
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> dict:
    """A small synthetic VOC (24 train_aug / 8 val / 4 test, <= 64 px), validated: the dataset report."""
    from wsss.core.config import load_config
    from wsss.data.classes import VOC
    from wsss.data.synthetic import generate_dataset
    from wsss.data.voc import VOCPaths, validate_dataset

    options = load_config(
        overrides={"synthetic": {"num_train": 24, "num_val": 8, "num_test": 4, "min_size": 48, "max_size": 64}}
    )["synthetic"]
    root = tmp_path_factory.mktemp("tiny") / "VOC2012"
    generate_dataset(root, **options, progress=False)
    return validate_dataset(VOCPaths.create(root, saliency_root=root / "Saliency"), classes=VOC, progress=False)


@pytest.fixture(scope="module")
def prepared(tiny_dataset, tmp_path_factory):
    """Random backbone weights and two superpixel shards of the tiny dataset's training split."""
    import torch

    from icd.superpixels import compute_superpixel_shard
    from wsss.core.config import load_config
    from wsss.core.shards import shard_ids
    from wsss.data.voc import VOCPaths
    from wsss.nets.backbones import VGG16DeepLab, save_backbone

    folder = tmp_path_factory.mktemp("icd")
    torch.manual_seed(0)
    weights = folder / "backbone.pth"
    save_backbone(VGG16DeepLab(width=ICD_TEST_WIDTH, batch_norm=True), weights, "minus127")
    ids = tiny_dataset["splits"]["train_aug"]
    options = {k: v for k, v in load_config()["superpixels"].items() if k != "shards"}
    options.update(feature_input_size=65, max_regions=8)
    shards = []
    for index in range(2):
        path = folder / f"shard_{index}.npz"
        compute_superpixel_shard(
            path,
            shard_ids(ids, index, 2),
            image_path=VOCPaths.create(tiny_dataset["voc_root"]).image,
            weights=weights,
            width=ICD_TEST_WIDTH,
            batch_norm=True,
            normalisation="minus127",
            progress=False,
            **options,
        )
        shards.append(str(path))
    return weights, shards
