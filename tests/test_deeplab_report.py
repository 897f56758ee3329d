"""Tables 7/8 and the Fig. 6-style figure from evaluation records; the stage's plan from the config."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import deeplab.workflow as plan
from deeplab.report import prediction_figure, write_segmentation_tables
from wsss.core.config import load_config
from wsss.core.errors import ConfigError
from wsss.data.io import read_mask, write_mask
from wsss.data.voc import VOCPaths


def record(backbone, seeds, miou_raw, miou_crf=None, dataset="voc"):
    results = {"raw": {"miou": miou_raw, "per_class": {"background": 0.9, "cat": None}}}
    if miou_crf is not None:
        results["crf"] = {"miou": miou_crf, "per_class": {"background": 0.95, "cat": 0.1}}
    return {
        "dataset": dataset,
        "backbone": backbone,
        "seeds": seeds,
        "split": "val",
        "multiscale": False,
        "results": results,
    }


def test_segmentation_csv_and_paper_tables(tmp_path):
    evaluations = [
        record("vgg16", "icd_crf", 0.4, 0.45),
        record("vgg16", "icd_sal", 0.5),
        record("vgg16", "gt", 0.7),
        record("resnet101", "cam", 0.3),
    ]
    write_segmentation_tables(evaluations, tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "pc.csv")
    table = pd.read_csv(tmp_path / "s.csv")
    assert list(table.columns) == [
        "backbone",
        "seeds",
        "round",
        "supervision",
        "dataset",
        "split",
        "multiscale",
        "crf",
        "miou",
    ]
    assert set(table["round"]) == {1}
    assert table[["seeds", "supervision", "crf"]].values.tolist() == [
        ["icd_crf", "I", False],
        ["icd_crf", "I", True],
        ["icd_sal", "I+S", False],
        ["gt", "full", False],
        ["cam", "I", False],
    ]
    assert table["miou"].tolist() == [0.4, 0.45, 0.5, 0.7, 0.3]
    markdown = (tmp_path / "s.md").read_text()
    assert "Table 7" in markdown and "Table 8" in markdown
    assert "| icd_crf | 1 | I | no | yes | 45.0 | 61.2 | 60.9 |" in markdown
    assert "| icd_sal | 1 | I+S | no | no | 50.0 | 64.0 | 63.9 |" in markdown
    assert "| cam | 1 | I | no | no | 30.0 | - | - |" in markdown  # the paper has no CAM-seed DeepLab row
    per_class = pd.read_csv(tmp_path / "pc.csv")
    assert len(per_class) == 5 and per_class["cat"].isna().sum() == 4


def test_a_coco_row_names_its_dataset_and_sits_beside_no_paper_number(tmp_path):
    """The paper's numbers are VOC's: a COCO run's rows are shown alone."""
    rows = write_segmentation_tables(
        [record("vgg16", "icd_crf", 0.3, dataset="coco")], tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "pc.csv"
    )
    assert [row["dataset"] for row in rows] == ["coco"]
    assert pd.read_csv(tmp_path / "s.csv")["dataset"].tolist() == ["coco"]
    assert "| icd_crf | 1 | I | no | no | 30.0 | - | - |" in (tmp_path / "s.md").read_text()


def test_a_further_round_is_a_row_of_its_seed_set_and_round_and_leaves_round_one_as_it_was(tmp_path):
    """The evaluation record of `<seeds>_round<r>` (its run's name) becomes a row of the seed set with its round; the
    round-1 rows keep their numbers, and only they sit beside the paper's (trained once, on the seeds)."""
    round_one = [record("vgg16", "icd_crf", 0.4, 0.45), record("vgg16", "icd_sal", 0.5), record("vgg16", "gt", 0.7)]
    further = [record("vgg16", "icd_crf_round2", 0.5, 0.55), record("vgg16", "icd_sal_round3", 0.6)]
    alone = write_segmentation_tables(round_one, tmp_path / "a.csv", tmp_path / "a.md", tmp_path / "a_pc.csv")
    rows = write_segmentation_tables(round_one + further, tmp_path / "s.csv", tmp_path / "s.md", tmp_path / "pc.csv")
    assert rows[: len(alone)] == alone
    table = pd.read_csv(tmp_path / "s.csv")
    assert table[["seeds", "round", "supervision", "crf", "miou"]].values.tolist()[len(alone) :] == [
        ["icd_crf", 2, "I", False, 0.5],
        ["icd_crf", 2, "I", True, 0.55],
        ["icd_sal", 3, "I+S", False, 0.6],
    ]
    assert table.iloc[: len(alone)].equals(pd.read_csv(tmp_path / "a.csv"))
    markdown = (tmp_path / "s.md").read_text()
    assert "| icd_crf | 1 | I | no | yes | 45.0 | 61.2 | 60.9 |" in markdown
    assert "| icd_crf | 2 | I | no | yes | 55.0 | - | - |" in markdown
    assert "| icd_sal | 3 | I+S | no | no | 60.0 | - | - |" in markdown
    per_class = pd.read_csv(tmp_path / "pc.csv")
    assert per_class[["seeds", "round", "crf"]].values.tolist()[-3:] == [
        ["icd_crf", 2, False],
        ["icd_crf", 2, True],
        ["icd_sal", 3, False],
    ]


def test_prediction_figure_shows_every_model_beside_the_ground_truth(tiny_dataset, tmp_path):
    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    for image_id in tiny_dataset["splits"]["val"]:
        truth = read_mask(paths.ground_truth("val", image_id))
        write_mask(tmp_path / "a" / f"{image_id}.png", np.where(truth == 255, 0, truth).astype(np.uint8))
    prediction_figure(tmp_path / "fig.png", tiny_dataset, {"vgg16 gt": str(tmp_path / "a")}, count=3)
    with Image.open(tmp_path / "fig.png") as figure:
        assert figure.size == (600, 600)  # 3 columns (image, prediction, GT) x 3 rows, 2 inches at 100 dpi
        assert np.asarray(figure.convert("L")).std() > 10


def test_the_plan_trains_every_backbone_on_seeds_and_baselines_and_checks_the_config():
    deeplab = load_config()["deeplab"]
    assert plan.seed_sets({**deeplab, "seeds": ["icd_crf", "cam"], "baselines": ["cam", "gt"]}) == [
        "icd_crf",
        "cam",
        "gt",
    ]
    targets = plan.stage_targets(
        "r", {**deeplab, "backbones": ["vgg16"], "seeds": ["icd_crf"], "baselines": ["gt"]}, "test"
    )
    assert targets == [
        "r/vgg16/icd_crf/model.pt",
        "r/vgg16/icd_crf/evaluation.json",
        "r/vgg16/icd_crf/test.tar",
        "r/vgg16/gt/model.pt",
        "r/vgg16/gt/evaluation.json",
        "r/vgg16/gt/test.tar",
    ]
    options = plan.training_options(deeplab, "resnet101", {"batch_norm": True}, 3, "torchvision", fc6_dilation=1)
    assert options["deeplab"]["lr"] == {"resnet101": deeplab["lr"]["resnet101"]} and options["model"] == {}
    vgg16 = plan.training_options(deeplab, "vgg16", {"batch_norm": True}, 3, "minus127", fc6_dilation=1)
    assert vgg16["model"] == {"batch_norm": True, "fc6_dilation": 1} and "fc6_dilation" not in vgg16["deeplab"]
    assert options["normalisation"] == "torchvision"
    assert not plan.TEST_TIME_KEYS & set(options["deeplab"])
    with pytest.raises(ConfigError, match=r"\['icd_sal'\].*needs data.saliency_root"):
        plan.check_config(deeplab, ["cam", "icd", "icd_crf"], synthetic=True)
    # Every seed folder the seeds stage writes can be trained on, the honest baselines included; another
    # network's (the ablation network's *_no_td) only when it is trained.
    wanted = {**deeplab, "seeds": ["cam_crf", "cam_sp", "icd_refined_no_td"]}
    plan.check_config(wanted, ["cam", "cam_crf", "cam_sp", "icd_refined_no_td"], synthetic=True)
    with pytest.raises(ConfigError, match=r"\['icd_refined_no_td'\].*the network `networks.<name>`"):
        plan.check_config(wanted, ["cam", "cam_crf", "cam_sp"], synthetic=True)
    with pytest.raises(ConfigError, match="deeplab.weights.resnet101 is not set"):
        plan.check_config(deeplab, ["cam", "icd_crf", "icd_sal"], synthetic=False)


def test_further_rounds_train_each_backbone_again_on_its_own_predictions_of_the_training_split():
    deeplab = {**load_config()["deeplab"], "seeds": ["icd_crf", "icd_sal"], "baselines": ["cam", "gt"]}
    assert plan.runs("r", deeplab, ["vgg16"]) == [
        plan.Run("vgg16", seeds, 1, f"r/vgg16/{seeds}") for seeds in ("icd_crf", "icd_sal", "cam", "gt")
    ]
    three = {**deeplab, "rounds": 3, "round_seeds": ["icd_crf"]}
    further = plan.runs("r", three)[4:]
    assert [(run.backbone, run.folder, run.title) for run in further[:2]] == [
        ("vgg16", "r/vgg16/icd_crf_round2", "vgg16 icd_crf r2"),
        ("vgg16", "r/vgg16/icd_crf_round3", "vgg16 icd_crf r3"),
    ]
    assert [run.folder for run in further[2:]] == [
        f"r/resnet101/{name}" for name in ("icd_crf", "icd_sal", "cam", "gt", "icd_crf_round2", "icd_crf_round3")
    ]
    assert "r/resnet101/icd_crf_round3/evaluation.json" in plan.stage_targets("r", three, "test", ["resnet101"])
    # by default every seed set of deeplab.seeds, never the baselines that are not among them
    assert plan.round_seed_sets({**deeplab, "seeds": ["icd_crf", "gt"]}) == ["icd_crf"]
    assert plan.runs("r", {**deeplab, "rounds": 2}, ["vgg16"])[4:] == [
        plan.Run("vgg16", seeds, 2, f"r/vgg16/{seeds}_round2") for seeds in ("icd_crf", "icd_sal")
    ]
    # round 1 on the seeds (gt: from the dataset), round r on round r-1's predictions of the same backbone
    assert plan.training_labels("s", "r", "vgg16", "icd_crf") == "s/icd_crf"
    assert plan.training_labels("s", "r", "vgg16", "gt") == []
    assert plan.training_labels("s", "r", "resnet101", "icd_crf_round2") == "r/resnet101/icd_crf/train_labels"
    assert plan.training_labels("s", "r", "vgg16", "icd_crf_round3") == "r/vgg16/icd_crf_round2/train_labels"
    assert plan.parse_run_name("icd_crf_round12") == ("icd_crf", 12) and plan.parse_run_name("cam") == ("cam", 1)
    # the rounds do not reach the training step's options: round 1's jobs stay as they were
    options = plan.training_options(three, "vgg16", {"batch_norm": True}, 0, "minus127", fc6_dilation=1)
    assert options == plan.training_options(deeplab, "vgg16", {"batch_norm": True}, 0, "minus127", fc6_dilation=1)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"round_seeds": ["cam"]}, r"deeplab.round_seeds names 'cam', .* among \['icd_crf', 'icd_sal'\]"),
        ({"round_seeds": ["icd_crf", "gt"]}, r"deeplab.round_seeds names 'gt', .* the ground truth excepted"),
        ({"seeds": ["icd_crf", "icd_crf_round2"]}, r"deeplab.seeds names \['icd_crf_round2'\], whose `_round<N>`"),
    ],
)
def test_a_further_round_of_a_seed_set_not_trained_on_or_a_name_that_reads_as_a_round_stops_the_plan(change, message):
    deeplab = {**load_config()["deeplab"], "seeds": ["icd_crf", "icd_sal"], "rounds": 2, **change}
    with pytest.raises(ConfigError, match=message):
        plan.check_config(deeplab, ["cam", "icd_crf", "icd_sal", "icd_crf_round2"], synthetic=True)
