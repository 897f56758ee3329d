"""MS-COCO 2014 end to end (issue 16): a COCO-format dataset, as downloaded, run through every stage on the tiny sizes.

The dataset is the synthetic generator's, written the way COCO ships: train2014/ and val2014/ JPEGs named
COCO_<folder>_<12 digits>.jpg and instances JSONs holding each class region of an image as one compressed-RLE
annotation under COCO's category id of that class (aeroplane -> airplane, ...) among COCO's 80 categories. The run
converts it (convert_coco), checks it, trains ICD with 80 outputs, makes seeds and Tables 1-3, and trains, predicts
and evaluates DeepLab on both backbones, with no test split and `coco` in the tables' dataset column.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from tests.scenarios import scenario, voc_scenario
from tests.test_coco import categories
from tests.workflow_helpers import snakemake
from wsss.core.config import load_config
from wsss.data.classes import VOC_CLASSES
from wsss.data.coco import COCO_CATEGORY_IDS, COCO_CLASSES
from wsss.data.io import image_size, read_mask
from wsss.data.synthetic import generate_dataset
from wsss.data.voc import VOCPaths, read_split

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

# The generator's VOC classes under their COCO names.
COCO_NAME = {"aeroplane": "airplane", "boat": "boat", "car": "car", "cat": "cat", "train": "train"}
FOLDERS = {"train_aug": "train2014", "val": "val2014"}


def write_coco(voc_root: Path, coco_root: Path) -> dict[str, int]:
    """The synthetic VOC tree at `voc_root` as a COCO 2014 download at `coco_root`; returns images per folder."""
    paths = VOCPaths.create(voc_root)
    category = {VOC_CLASSES.index(voc): COCO_CATEGORY_IDS[COCO_CLASSES.index(coco)] for voc, coco in COCO_NAME.items()}
    counts = {}
    for split, folder in FOLDERS.items():
        (coco_root / folder).mkdir(parents=True)
        images, annotations = [], []
        for number, image_id in enumerate(read_split(paths, split), start=1):
            name = f"COCO_{folder}_{number:012d}.jpg"
            shutil.copy(paths.image(image_id), coco_root / folder / name)
            height, width = image_size(paths.image(image_id))
            images.append({"id": number, "file_name": name, "height": height, "width": width})
            mask = read_mask(paths.ground_truth(split, image_id))
            for value in sorted(set(np.unique(mask).tolist()) - {0, 255}):
                rle = mask_utils.encode(np.asfortranarray((mask == value).astype(np.uint8)))
                segmentation = {"counts": rle["counts"].decode("ascii"), "size": [height, width]}
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": number,
                        "category_id": category[value],
                        "segmentation": segmentation,
                        "iscrowd": 0,
                    }
                )
        (coco_root / "annotations").mkdir(exist_ok=True)
        instances = {"images": images, "annotations": annotations, "categories": categories()}
        (coco_root / "annotations" / f"instances_{folder}.json").write_text(json.dumps(instances))
        counts[folder] = len(images)
    return counts


@pytest.fixture(scope="module")
def coco_run(finished_run, tmp_path_factory) -> tuple[Path, dict[str, int]]:
    workdir = tmp_path_factory.mktemp("coco")
    voc_root = workdir / "generated" / "VOC2012"
    options = load_config(overrides={"synthetic": scenario("tiny")["synthetic"]})["synthetic"]
    generate_dataset(voc_root, **options, progress=False)
    counts = write_coco(voc_root, workdir / "data" / "coco")
    # The tiny run's stand-ins for ImageNet VGG16 and ResNet101 weights, as a user's files.
    weights, resnet = workdir / "data" / "vgg16.pth", workdir / "data" / "resnet101.pth"
    shutil.copy(finished_run / "results" / "tiny" / "pretrain" / "backbone.pth", weights)
    shutil.copy(finished_run / "results" / "tiny" / "pretrain" / "resnet101.pth", resnet)
    config = voc_scenario(voc_root, weights, run="coco")
    config["data"] = {"source": "coco", "coco_root": str(workdir / "data" / "coco")}
    config["deeplab"]["weights"] = {"resnet101": str(resnet)}
    result = snakemake(workdir, "--cores", "2", config=config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir / "results" / "coco", counts


@pytest.mark.slow
def test_coco_as_downloaded_runs_every_stage(coco_run):
    results, counts = coco_run
    dataset = json.loads((results / "data" / "dataset.json").read_text())
    assert dataset["source"] == "coco" and dataset["classes"] == list(COCO_CLASSES)
    assert dataset["counts"] == {"train": counts["train2014"], "val": counts["val2014"]}
    present = {label for labels in dataset["labels"].values() for label in labels}
    names = {COCO_CLASSES[label - 1] for label in present}  # the generated classes the 16 images hold
    assert len(names) >= 2 and names <= set(COCO_NAME.values())
    icd = torch.load(results / "networks" / "icd" / "model.pt", weights_only=True)["model"]
    assert icd["fc8.weight"].shape[0] == 80
    with (results / "tables" / "seeds.csv").open() as handle:
        assert {row["variant"] for row in csv.DictReader(handle)} >= {"cam", "icd_crf"}
    with (results / "tables" / "segmentation.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert {(row["backbone"], row["dataset"], row["split"]) for row in rows} == {
        ("vgg16", "coco", "val"),
        ("resnet101", "coco", "val"),
    }
    for backbone in ("vgg16", "resnet101"):
        run = results / "deeplab" / backbone / "gt"
        assert (run / "evaluation.json").is_file() and not list(run.glob("*.tar")) and not (run / "test").exists()
