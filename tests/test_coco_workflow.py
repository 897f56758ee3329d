"""`data.source: coco` in the workflow (issue 16): the config it derives, the plan (rule convert_coco before the
dataset check, no test split), and a real conversion and check on the tiny COCO tree of tests/test_coco.py."""

from __future__ import annotations

import json
import re
import shlex

import pytest
import torch

import deeplab.workflow as deeplab_plan
from benchmarks.dryrun import COCO_COUNTS, NOT_JSON, fabricate_coco_layout
from deeplab.infer import predict_split
from icd.cli import build_parser
from tests.test_coco import TRAIN, VAL, make_coco
from tests.workflow_helpers import snakemake
from wsss.core.config import check_data_roots, load_config
from wsss.core.errors import ConfigError
from wsss.data.classes import FOREGROUND_CLASSES, ClassList
from wsss.data.coco import COCO_CLASSES, convert_coco
from wsss.data.voc import SplitRoles, VOCPaths, validate_dataset
from wsss.nets.backbones import VGG16DeepLab
from wsss.workflow import dataset_check, dataset_roots, has_saliency

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

COCO = {"run": "coco", "data": {"source": "coco", "coco_root": "/data/coco"}, "pretrain": {"weights": "/w/vgg16.pth"}}
CONVERTED = "results/coco/data/COCO2014"


def coco_config(**data) -> dict:
    return load_config(overrides={**COCO, "data": {**COCO["data"], **data}})


def test_coco_derives_its_classes_and_splits_and_has_no_test_split():
    config = coco_config()
    data = config["data"]
    assert data["classes"] == list(COCO_CLASSES)
    assert (data["train_split"], data["eval_split"], data["test_split"]) == ("train", "val", None)
    assert config["deeplab"]["seeds"] == ["icd_crf"]  # no saliency maps unless data.saliency_root is set
    assert coco_config(eval_split="minival")["data"]["eval_split"] == "minival"  # a split the user sets stays
    assert load_config(overrides=config)["data"] == data  # validating again changes nothing
    # VOC keeps its splits, and may now have no test split
    voc = {**COCO, "data": {"source": "voc", "voc_root": "/data/VOC2012"}}
    assert load_config(overrides=voc)["data"]["test_split"] == "test"
    assert load_config(overrides=voc)["data"]["classes"] == list(FOREGROUND_CLASSES)
    voc["data"]["test_split"] = None
    assert load_config(overrides=voc)["data"]["test_split"] is None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"classes": ["cat", "dog"]}, "data.classes"),
        ({"classes": sorted(COCO_CLASSES)}, "data.classes"),  # COCO's names in another order are other labels
        ({"test_split": "test"}, "data.test_split"),
        ({"voc_root": "/data/VOC2012"}, "data.voc_root"),
    ],
)
def test_what_the_converted_tree_fixes_is_refused_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=rf"at '{re.escape(key)}'"):
        coco_config(**data)


def test_a_missing_coco_root_is_named_with_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"at 'data.coco_root'.*/data/coco does not exist.*train2014/"):
        check_data_roots(coco_config())
    check_data_roots(coco_config(coco_root=str(tmp_path)))  # an existing folder passes, unread


def test_planning_reads_the_converted_tree_and_plans_no_test_split():
    config = coco_config()
    assert dataset_roots(config) == (CONVERTED, CONVERTED, None) and not has_saliency(config)
    assert dataset_roots(coco_config(saliency_root="/data/sal"))[2] == "/data/sal"
    check = dataset_check(config, {"width": 1.0, "batch_norm": False})
    assert check["source"] == "coco" and check["splits"] == ["train", "val", ""]
    assert json.loads(check["classes"]) == list(COCO_CLASSES)
    targets = deeplab_plan.stage_targets("root", config["deeplab"], config["data"]["test_split"])
    assert targets and not [target for target in targets if target.endswith(".tar")]


def test_the_converted_tree_passes_the_dataset_check_without_a_test_split(tmp_path):
    out = tmp_path / "COCO2014"
    convert_coco(make_coco(tmp_path / "coco"), out, progress=False)
    roles = SplitRoles(train="train", eval="val", test=None)
    report = validate_dataset(VOCPaths.create(out), roles, classes=ClassList(COCO_CLASSES), progress=False)
    assert report["roles"] == {"train": "train", "eval": "val", "test": None}
    assert report["splits"] == {"train": [TRAIN.format(9), TRAIN.format(25)], "val": [VAL.format(42)]}
    with pytest.raises(ConfigError, match="no test split"):  # before any model is read
        predict_split(tmp_path / "no model.pt", report, "test", tmp_path / "out", scales=[1.0], flip=False, crf=None)


def planned_jobs(stdout: str) -> tuple[list[str], dict[str, str]]:
    """(rules in the order `snakemake -n` lists their jobs, {rule: its last job's block})."""
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", stdout, re.MULTILINE)
    return [rule for rule, _ in jobs], dict(jobs)


def test_a_dry_run_plans_the_conversion_before_the_dataset_check_and_never_reads_the_annotations(tmp_path):
    config = fabricate_coco_layout(tmp_path / "fabricated", dict.fromkeys(COCO_COUNTS, 3))
    coco_root = config["data"]["coco_root"]
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    result = snakemake(workdir, "-n", "-p", config=config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    order, blocks = planned_jobs(result.stdout)
    assert order.count("convert_coco") == 1 and order.index("convert_coco") < order.index("validate_data")
    assert re.search(rf"^    input: {re.escape(coco_root)}$", blocks["convert_coco"], re.M)
    assert re.search(
        rf"^    output: {CONVERTED}, results/coco/data/coco_conversion.json$", blocks["convert_coco"], re.M
    )
    validate_inputs = re.search(r"^    input: (.*)$", blocks["validate_data"], re.M)[1].split(", ")
    assert CONVERTED in validate_inputs and coco_root not in validate_inputs
    assert "results/coco/data/coco_conversion.json" in validate_inputs
    command = shlex.split(result.stdout.split("Shell command: icd validate-data ", 1)[1].split(" > ", 1)[0])
    arguments = build_parser().parse_args(
        ["validate-data", *command]
    )  # the verb accepts what the rule gives it: empty values too
    assert (arguments.source, arguments.voc_root, arguments.sbd_root) == ("coco", CONVERTED, CONVERTED)
    assert arguments.saliency_root == "" and arguments.test_split == ""
    assert arguments.conversion == "results/coco/data/coco_conversion.json"
    assert json.loads(arguments.classes) == list(COCO_CLASSES)
    assert ".tar" not in result.stdout and "--test-out-dir" not in result.stdout  # no test split, no server tar
    assert re.search(r"^    output: \S+/val$", blocks["predict_deeplab"], re.M)  # the eval split's predictions only
    for split in ("train2014", "val2014"):  # still what fabricate_coco_layout wrote: nothing had to parse it
        assert (tmp_path / "fabricated" / "coco" / "annotations" / f"instances_{split}.json").read_text() == NOT_JSON


@pytest.mark.slow
def test_a_real_run_converts_checks_and_records_coco(tmp_path):
    """rule convert_coco, validate_data and accept_data for real, on the tiny COCO tree, under Snakemake."""
    coco = make_coco(tmp_path / "coco")
    weights = tmp_path / "vgg16.pth"
    torch.save(VGG16DeepLab(width=0.0625, batch_norm=True).state_dict(), weights)
    config = {
        "run": "coco",
        "data": {"source": "coco", "coco_root": str(coco)},
        "pretrain": {"weights": str(weights), "normalisation": "torchvision"},
        "model": {"backbone": "vgg16_bn", "width": 0.0625},
        "deeplab": {"backbones": ["vgg16"], "width": 0.0625},
    }
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    result = snakemake(workdir, "--cores", "2", "data", config=config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    dataset = json.loads((workdir / "results" / "coco" / "data" / "dataset.json").read_text())
    assert dataset["source"] == "coco" and dataset["classes"] == list(COCO_CLASSES)
    assert dataset["roles"] == {"train": "train", "eval": "val", "test": None}
    assert dataset["counts"] == {"train": 2, "val": 1}
    assert dataset["conversion"]["counts"] == {"train": 2, "val": 1}
    assert dataset["conversion"]["without_labels"] == {"train": 2, "val": 1}
    assert dataset["voc_root"] == CONVERTED and dataset["labels"][TRAIN.format(9)]
