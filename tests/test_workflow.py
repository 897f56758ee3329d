"""The Snakemake DAG end to end on a tiny synthetic config: every stage that exists runs and caches."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.workflow_helpers import TINY, snakemake
from wsss.core.config import PROJECT_ROOT


@pytest.mark.slow
def test_default_target_builds_every_stage(finished_run):
    results = finished_run / "results" / "tiny"
    dataset = json.loads((results / "data" / "dataset.json").read_text())
    assert dataset["counts"] == {"train_aug": 16, "val": 4, "test": 2}
    assert json.loads((results / "data" / "synthetic_stats.json").read_text())["images"]["train_aug"] == 16
    premise = json.loads((results / "pretrain" / "premise.json").read_text())
    assert set(premise) == {"pretrained", "random_init"}
    assert sorted(p.name for p in (results / "superpixels").iterdir()) == ["shard_0.npz", "shard_1.npz"]
    history = json.loads((results / "networks" / "icd" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    # Table 3's ablation network: trained the same way, without the top-down loss.
    ablation = json.loads((results / "networks" / "no_td" / "history.json").read_text())
    assert [record["epoch"] for record in ablation] == [1, 2]
    assert all(record["loss_top_down"] == 0 for record in ablation)
    assert any(record["loss_top_down"] > 0 for record in history)
    # The W-OoD network: its OoD losses from its start epoch (tiny.yaml: the second), its prototypes saved.
    ood = json.loads((results / "networks" / "ood" / "history.json").read_text())
    assert ood[0]["loss_ood"] == ood[0]["loss_distance"] == 0 and ood[1]["loss_ood"] > 0
    assert (results / "networks" / "ood" / "ood_prototypes.pt").is_file()
    assert "model" in torch.load(results / "networks" / "icd" / "model.pt", weights_only=True)
    table = (results / "tables" / "score_map_ap.csv").read_text().splitlines()
    assert table[0].startswith("scores,mAP") and [row.split(",")[0] for row in table[1:]] == [
        "cam",
        "bottom_up",
        "refined",
        "adapted",
        "bottom_up_no_td",
        "refined_no_td",
        "cam_ood",
        "bottom_up_ood",
        "refined_ood",
        "adapted_ood",
    ]
    seeds = (results / "tables" / "seeds.csv").read_text().splitlines()
    assert seeds[0] == "table,variant,threshold,miou,miou_strict,recall,precision"
    assert [row.split(",")[1] for row in seeds if row.startswith("3,")] == [
        "cam",
        "cam_crf",
        "cam_sp",
        "icd_bottom_up",
        "icd_refined",
        "icd",
        "icd_crf",
        "icd_sal",
        "icd_bottom_up_no_td",
        "icd_refined_no_td",
        "cam_ood",
        "icd_bottom_up_ood",
        "icd_refined_ood",
        "icd_ood",
        "icd_crf_ood",
    ]
    assert set(json.loads((results / "networks" / "icd" / "cam_background.json").read_text())) == {"cam", "cam_sp"}
    assert len(list((results / "seeds" / "icd_crf").glob("*.png"))) == 16
    assert (results / "figures" / "seeds_fig4.png").stat().st_size > 10_000
    # The context leakage of every seed set (the synthetic data's context masks) and the OoD figure.
    leakage = {
        (row["variant"], row["class"]): row
        for row in csv.DictReader((results / "tables" / "context_leakage.csv").read_text().splitlines())
    }
    assert {("icd_crf", "all"), ("icd_crf_ood", "all"), ("cam_ood", "all"), ("gt", "all")} <= set(leakage)
    assert int(leakage[("gt", "all")]["context_pixels"]) > 0 and int(leakage[("gt", "all")]["leaked_pixels"]) == 0
    assert (results / "figures" / "ood_fig4.png").stat().st_size > 10_000
    for rule in (
        "synthesize_data",
        "validate_data",
        "pretrain_backbone",
        "measure_premise",
        "pretrain_resnet101",
        "train_icd/icd",
        "train_icd/no_td",
    ):
        assert (results / "logs" / f"{rule}.log").is_file()
    stand_in = json.loads((results / "pretrain" / "resnet101_metrics.json").read_text())
    assert [record["iteration"] for record in stand_in["history"]] == [1, 2]
    assert "fc.weight" in torch.load(results / "pretrain" / "resnet101.pth", weights_only=True)
    # DeepLab ResNet101 starts from the stand-in, through the --weights path real ImageNet weights take.
    resnet_log = (results / "logs" / "deeplab" / "train_resnet101_gt.log").read_text()
    assert "random initialisation" not in resnet_log and "final loss" in resnet_log
    # The second DeepLab round (tiny.yaml): each backbone's icd_crf model labels the training split, on which the
    # same backbone trains again; its rows in the tables say so.
    for backbone in ("vgg16", "resnet101"):
        labels = results / "deeplab" / backbone / "icd_crf" / "train_labels"
        assert len(list(labels.glob("*.png"))) == 16
        round_two = {path.name for path in (results / "deeplab" / backbone / "icd_crf_round2").iterdir()}
        assert {"model.pt", "history.json", "evaluation.json", "test.tar"} <= round_two
        log = (results / "logs" / "deeplab" / f"predict_train_{backbone}_icd_crf.log").read_text()
        assert "predict train_aug" in log
    rows = list(csv.DictReader((results / "tables" / "segmentation.csv").read_text().splitlines()))
    assert sorted({(row["backbone"], row["seeds"], row["round"]) for row in rows}) == sorted(
        (backbone, seeds, round_number)
        for backbone in ("vgg16", "resnet101")
        for seeds, round_number in (("icd_crf", "1"), ("gt", "1"), ("icd_crf", "2"))
    )


@pytest.mark.slow
def test_nothing_reruns_and_a_training_knob_reruns_only_training(finished_run):
    assert "Nothing to be done" in snakemake(finished_run, "-n").stdout
    changed = {**TINY, "icd": {"lr": 0.002}}
    dry = snakemake(finished_run, "-n", config=changed).stdout
    jobs = job_stats(dry)
    assert jobs["train_icd"] == 3  # tiny.yaml trains the W-OoD network beside icd and no_td
    assert not {"superpixels", "pretrain_backbone", "pretrain_resnet101", "synthesize_data", "validate_data"} & set(
        jobs
    )


# What is made of the seeds: tables, figures; DeepLab trained on the ICD+CRF seeds with both backbones, then
# (tiny.yaml's second round) on their predictions of the training split, evaluated, tabled, drawn; the default target.
MADE_OF_SEEDS = {
    "seed_table": 1,
    "context_leakage": 1,
    "ood_figure": 1,
    "seed_figure": 1,
    "seed_iou_chart": 1,
    "train_deeplab": 4,
    "predict_deeplab": 4,
    "predict_deeplab_train": 2,
    "evaluate_deeplab": 4,
    "segmentation_table": 1,
    "segmentation_figure": 1,
    "all": 1,
}
# name: (the setting, the seed folders whose PNGs it changes, the jobs of the finished TINY run it reruns ({rule:
# jobs}, the dry run's "Job stats"): the seed families that read the setting (one make_seeds job per family and
# shard, icd.seed_sets) and their seed sets, then what is made of the seeds. Nothing upstream of the seeds
# (superpixels, ICD, score maps, Table 1, the CAM sweep), no family that does not read it (a threshold leaves the
# CAM baselines alone, a CRF setting the seeds without CRF), nor DeepLab's runs on ground truth.
SEED_SETTINGS = {
    "seeds.threshold": (
        {"seeds": {"threshold": 0.2}},
        {"icd_bottom_up", "icd_refined", "icd", "icd_crf", "icd_sal", "icd_bottom_up_no_td", "icd_refined_no_td"}
        | {"icd_bottom_up_ood", "icd_refined_ood", "icd_ood", "icd_crf_ood"},
        {"make_seeds": 6 * 2, "collect_seeds": 11, **MADE_OF_SEEDS},
    ),
    "crf.min_probability": (
        {"crf": {"min_probability": 0.9}},
        {"icd_crf", "cam_crf", "icd_crf_ood"},
        {"make_seeds": 3 * 2, "collect_seeds": 3, **MADE_OF_SEEDS},
    ),
}


def job_stats(dry: str) -> dict[str, int]:
    """{rule: jobs} of a dry run's "Job stats" table."""
    rows = dry.split("Job stats:")[1].split("\n\n")[0].splitlines()[3:]  # under the header and its rule
    counts = {rule: int(count) for rule, count in map(str.split, rows)}
    assert counts.pop("total") == sum(counts.values())
    return counts


def job_reasons(dry: str) -> list[tuple[str, str]]:
    """(rule, reason) of each job a dry run plans."""
    return re.findall(r"^(?:local)?rule (\w+):\n(?:    (?!reason:).*\n)*    reason: (.*)$", dry, re.MULTILINE)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SEED_SETTINGS))
def test_a_seed_setting_reruns_exactly_the_seeds_and_what_is_made_of_them(finished_run, name):
    setting, _, reruns = SEED_SETTINGS[name]
    dry = snakemake(finished_run, "-n", config={**TINY, **setting}).stdout
    assert job_stats(dry) == reruns
    # the seed shards rerun for their params, every other job only because its input is remade
    reasons = job_reasons(dry)
    assert len(reasons) == sum(reruns.values())
    assert [rule for rule, reason in reasons if not reason.startswith("Input files updated by another job:")] == [
        "make_seeds"
    ] * reruns["make_seeds"]
    assert all(reason.startswith("Params have changed") for rule, reason in reasons if rule == "make_seeds")


def seed_digests(seeds: Path) -> dict[str, dict[str, str]]:
    """{variant: {png: sha256}} of the collected seed folders."""
    return {
        folder.name: {png.name: hashlib.sha256(png.read_bytes()).hexdigest() for png in folder.glob("*.png")}
        for folder in seeds.iterdir()
        if folder.is_dir() and folder.name != "shards"
    }


@pytest.mark.slow
def test_a_new_seed_threshold_and_crf_setting_reach_the_seeds(finished_run, tmp_path):
    """The seed step run for real in a copy of the finished run, one setting after the other."""
    workdir = tmp_path / "run"
    shutil.copytree(finished_run, workdir)  # mtimes kept: only what the setting reruns runs
    seeds = workdir / "results" / "tiny" / "seeds"
    config = TINY
    for name, (setting, changing, _) in SEED_SETTINGS.items():  # the CRF setting comes on top of the threshold
        before = seed_digests(seeds)
        config = {**config, **setting}
        result = snakemake(workdir, "--cores", "2", "results/tiny/tables/seeds.csv", config=config)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        after = seed_digests(seeds)
        assert {variant: pngs.keys() for variant, pngs in after.items()} == {
            variant: pngs.keys() for variant, pngs in before.items()
        }  # the same folders of the same images
        changed = {variant for variant in after if after[variant] != before[variant]}
        assert changed == changing, name


@pytest.mark.slow
def test_without_the_ablation_network_its_no_td_rows_are_absent(finished_run):
    dry = snakemake(finished_run, "-n", config={**TINY, "networks": {**TINY["networks"], "no_td": None}}).stdout
    jobs = set(job_stats(dry))
    assert {"score_map_ap", "seed_table"} <= jobs  # the tables lose their *_no_td rows
    # the other seed sets are made without the ablation network's scores: they stay (so do DeepLab's rows)
    assert not {"make_seeds", "collect_seeds", "train_deeplab", "train_icd", "infer_scores"} & jobs
    reads_no_td = re.compile(r"^    (input|output): .*networks/no_td/", re.MULTILINE)
    assert not reads_no_td.search(dry) and reads_no_td.search(snakemake(finished_run, "-n", "-F").stdout)


@pytest.mark.slow
def test_a_network_added_in_the_config_adds_exactly_its_own_jobs(finished_run):
    """A user's variant is one config entry: it is trained, scored, swept and seeded by the same rules, beside the
    others, whose results stay; only the tables that list every network are made again."""
    wide = {"icd": {"lr": 0.004}, "seeds": ["cam", "icd_crf"]}
    dry = snakemake(finished_run, "-n", config={**TINY, "networks": {**TINY["networks"], "wide": wide}}).stdout
    jobs = job_stats(dry)
    assert jobs == {
        "train_icd": 1,
        "infer_scores": 2,
        "seed_sweep": 1,  # its CAM seeds need its own background threshold
        "make_seeds": 4,  # families cam_wide and icd_crf_wide, two shards each
        "collect_seeds": 2,
        "score_map_ap": 1,
        "seed_table": 1,
        "context_leakage": 1,
        "seed_iou_chart": 1,
        "all": 1,
    }
    assert "wildcards: network=wide" in dry and "--network wide" in dry
    assert "results/tiny/seeds/cam_wide" in dry and "results/tiny/seeds/icd_crf_wide" in dry


def test_lint_is_clean():
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr
