"""A dataset with its own classes, end to end (issue 16): three classes of the user's naming in the VOC layout,
`data.classes` in the config, and every stage (ICD, seeds, Tables 1-3, DeepLab both backbones, Tables 7/8, the
figures) runs on them with nothing sized or named for VOC's 20.

The dataset is the synthetic generator's, made with three VOC classes and then renamed and relabelled as a user's
own (apple, kiwi, plum as labels 1, 2, 3): a VOC-layout tree no VOC name or index survives in.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.scenarios import scenario, voc_scenario
from tests.workflow_helpers import snakemake
from wsss.core.config import load_config
from wsss.data.classes import class_index
from wsss.data.io import read_mask, write_mask
from wsss.data.synthetic import generate_dataset

GENERATED = ("aeroplane", "boat", "car")
OWN = ("apple", "kiwi", "plum")


def relabel(root: Path) -> None:
    """Rename the generated VOC classes to OWN in every XML and map their VOC indices to 1, 2, 3 in every mask."""
    renames = dict(zip(GENERATED, OWN, strict=True))
    for xml in (root / "Annotations").glob("*.xml"):
        text = xml.read_text()
        for voc, own in renames.items():
            text = text.replace(f"<name>{voc}</name>", f"<name>{own}</name>")
        xml.write_text(text)
    lut = np.arange(256, dtype=np.uint8)
    for position, name in enumerate(GENERATED, start=1):
        lut[class_index(name)] = position
    for folder in ("SegmentationClass", "SegmentationClassAug"):
        for path in (root / folder).glob("*.png"):
            write_mask(path, lut[read_mask(path)])


@pytest.fixture(scope="module")
def own_classes_run(finished_run, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("own classes")
    root = workdir / "data" / "Fruit"
    sizes = scenario("tiny")["synthetic"]
    options = load_config(overrides={"synthetic": {**sizes, "classes": list(GENERATED), "context_classes": ["boat"]}})[
        "synthetic"
    ]
    generate_dataset(root, **options, progress=False)
    relabel(root)
    # The tiny run's stand-ins for ImageNet VGG16 and ResNet101 weights, as a user's files.
    weights, resnet = workdir / "data" / "backbone.pth", workdir / "data" / "resnet101.pth"
    shutil.copy(finished_run / "results" / "tiny" / "pretrain" / "backbone.pth", weights)
    shutil.copy(finished_run / "results" / "tiny" / "pretrain" / "resnet101.pth", resnet)
    config = voc_scenario(root, weights, run="fruit")
    config["data"]["classes"] = list(OWN)
    config["deeplab"]["weights"] = {"resnet101": str(resnet)}
    result = snakemake(workdir, "--cores", "2", config=config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return workdir / "results" / "fruit"


def read_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_three_classes_of_their_own_run_every_stage(own_classes_run):
    results = own_classes_run
    dataset = json.loads((results / "data" / "dataset.json").read_text())
    assert dataset["classes"] == list(OWN)
    assert {label for labels in dataset["labels"].values() for label in labels} == {1, 2, 3}
    # ICD: one classifier output and one bottom-up direction per class, signs named by class.
    icd = torch.load(results / "networks" / "icd" / "model.pt", weights_only=True)["model"]
    assert icd["fc8.weight"].shape[0] == 3 and icd["directions"].shape[0] == 3
    history = json.loads((results / "networks" / "icd" / "history.json").read_text())
    assert set(history[-1]["sign"]) == set(OWN)
    # Seeds hold only the dataset's labels; the tables name its classes and no VOC class.
    seeds = results / "seeds" / "icd_crf"
    values = set(np.unique(np.concatenate([read_mask(p).ravel() for p in seeds.glob("*.png")])).tolist())
    assert values <= {0, 1, 2, 3, 255} and values & {1, 2, 3}
    per_class = read_rows(results / "tables" / "seeds_per_class.csv")
    assert set(per_class[0]) - {"variant"} <= {"background", *OWN} and set(OWN) & set(per_class[0])
    ap_columns = set(read_rows(results / "tables" / "score_map_ap.csv")[0])
    assert ap_columns - {"scores", "mAP"} <= set(OWN) and "aeroplane" not in ap_columns
    # DeepLab, both backbones: a logit per label (background included), evaluated per own class.
    for backbone in ("vgg16", "resnet101"):
        deeplab = torch.load(results / "deeplab" / backbone / "gt" / "model.pt", weights_only=True)["model"]
        head = [value for key, value in deeplab.items() if key.startswith("head.") and key.endswith("weight")]
        assert {weights.shape[0] for weights in head} == {4}
        evaluation = json.loads((results / "deeplab" / backbone / "gt" / "evaluation.json").read_text())
        assert all(set(result["per_class"]) == {"background", *OWN} for result in evaluation["results"].values())
    segmentation = read_rows(results / "tables" / "segmentation_per_class.csv")
    assert {"background", *OWN} <= set(segmentation[0]) and "aeroplane" not in segmentation[0]
    assert (results / "figures" / "seeds_fig4.png").stat().st_size > 10_000
