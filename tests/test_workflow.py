"""The Snakemake DAG end to end on a tiny synthetic config: every stage that exists runs and caches."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from icd.config import PROJECT_ROOT
from tests.workflow_helpers import TINY, snakemake


@pytest.mark.slow
def test_default_target_builds_every_stage(finished_run):
    results = finished_run / "results" / "tiny"
    dataset = json.loads((results / "data" / "dataset.json").read_text())
    assert dataset["counts"] == {"train_aug": 16, "val": 4, "test": 2}
    assert json.loads((results / "data" / "synthetic_stats.json").read_text())["images"]["train_aug"] == 16
    premise = json.loads((results / "pretrain" / "premise.json").read_text())
    assert set(premise) == {"pretrained", "random_init"}
    assert sorted(p.name for p in (results / "superpixels").iterdir()) == ["shard_0.npz", "shard_1.npz"]
    history = json.loads((results / "icd" / "history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]
    # Table 3's ablation network: trained the same way, without the top-down loss.
    ablation = json.loads((results / "icd_without_top_down" / "history.json").read_text())
    assert [record["epoch"] for record in ablation] == [1, 2]
    assert all(record["loss_top_down"] == 0 for record in ablation)
    assert any(record["loss_top_down"] > 0 for record in history)
    assert "model" in torch.load(results / "icd" / "model.pt", weights_only=True)
    table = (results / "tables" / "score_map_ap.csv").read_text().splitlines()
    assert table[0].startswith("scores,mAP") and [row.split(",")[0] for row in table[1:]] == [
        "cam", "bottom_up", "refined", "adapted"]
    seeds = (results / "tables" / "seeds.csv").read_text().splitlines()
    assert seeds[0] == "table,variant,threshold,miou,miou_strict,recall,precision"
    assert [row.split(",")[1] for row in seeds if row.startswith("3,")] == [
        "cam", "icd_bottom_up", "icd_refined", "icd", "icd_crf", "icd_sal"]
    assert len(list((results / "seeds" / "icd_crf").glob("*.png"))) == 16
    assert (results / "figures" / "seeds_fig4.png").stat().st_size > 10_000
    for rule in ("synthesize_data", "validate_data", "pretrain_backbone", "measure_premise", "pretrain_resnet101",
                 "train_icd", "train_icd_without_top_down"):
        assert (results / "logs" / f"{rule}.log").is_file()
    stand_in = json.loads((results / "pretrain" / "resnet101_metrics.json").read_text())
    assert [record["iteration"] for record in stand_in["history"]] == [1, 2]
    assert "fc.weight" in torch.load(results / "pretrain" / "resnet101.pth", weights_only=True)
    # DeepLab ResNet101 starts from the stand-in, through the --weights path real ImageNet weights take.
    resnet_log = (results / "logs" / "deeplab" / "train_resnet101_gt.log").read_text()
    assert "random initialisation" not in resnet_log and "final loss" in resnet_log


@pytest.mark.slow
def test_nothing_reruns_and_a_training_knob_reruns_only_training(finished_run):
    assert "Nothing to be done" in snakemake(finished_run, "-n").stdout
    changed = {**TINY, "icd": {"lr": 0.002}}
    dry = snakemake(finished_run, "-n", config=changed).stdout
    jobs = [line.split()[0] for line in dry.split("Job stats:")[1].splitlines()[3:] if line.strip()]
    assert {"train_icd", "train_icd_without_top_down"} <= set(jobs)
    assert not {"superpixels", "pretrain_backbone", "pretrain_resnet101", "synthesize_data",
                "validate_data"} & set(jobs)


@pytest.mark.slow
def test_a_seed_threshold_reruns_seeds_and_nothing_upstream(finished_run):
    dry = snakemake(finished_run, "-n", config={**TINY, "seeds": {"threshold": 0.2}}).stdout
    jobs = {line.split()[0] for line in dry.split("Job stats:")[1].splitlines()[3:] if line.strip()}
    assert {"make_seeds", "collect_seeds", "seed_table"} <= jobs
    assert not {"train_icd", "train_icd_without_top_down", "superpixels", "infer_scores",
                "infer_scores_without_top_down", "seed_sweep", "pretrain_backbone", "pretrain_resnet101"} & jobs


@pytest.mark.slow
def test_without_the_ablation_network_table3_rows_come_from_the_full_one(finished_run):
    dry = snakemake(finished_run, "-n", config={**TINY, "seeds": {"ablation_network": False}}).stdout
    jobs = {line.split()[0] for line in dry.split("Job stats:")[1].splitlines()[3:] if line.strip()}
    assert {"make_seeds", "score_map_ap"} <= jobs
    assert not {"train_icd", "train_icd_without_top_down", "infer_scores_without_top_down"} & jobs
    assert "--ablation-scores" not in dry and "--ablation-scores" in snakemake(finished_run, "-n", "-F").stdout


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition" in result.stdout + result.stderr
