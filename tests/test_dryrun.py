"""The VOC- and COCO-scale dry-run benchmarks: the DAG plans in seconds and its size does not grow with the images."""

from __future__ import annotations

import time

import pytest

import icd.workflow as icd_plan
from benchmarks.dryrun import (
    COCO_COUNTS,
    COCO_GOAL_SECONDS,
    GOAL_SECONDS,
    NOT_JSON,
    VOC_COUNTS,
    dry_run,
    fabricate_coco_layout,
    fabricate_layout,
)
from wsss.core.config import load_config

SHARDED = ("superpixels", "infer_scores", "make_seeds")


@pytest.mark.slow
def test_voc_scale_dry_run_is_sharded_and_fast(tmp_path, capsys):
    start = time.perf_counter()
    config = fabricate_layout(tmp_path / "full", VOC_COUNTS)
    assert sum(1 for _ in (tmp_path / "full" / "VOCdevkit" / "VOC2012" / "JPEGImages").iterdir()) == 13_487
    jobs, seconds = dry_run(tmp_path / "full", config)
    with capsys.disabled():
        print(
            f"\nVOC-scale dry run: {sum(jobs.values())} jobs in {seconds:.1f} s "
            f"(fabrication {time.perf_counter() - start - seconds:.1f} s, goal <= {GOAL_SECONDS:.0f} s)"
        )

    settings = load_config(overrides=config)
    shards = {
        "superpixels": settings["superpixels"]["shards"],
        "infer_scores": settings["seeds"]["shards"] * 2,  # the primary network and the ablation network
        "make_seeds": settings["seeds"]["shards"] * len(icd_plan.families(settings)),
    }
    assert {rule: jobs[rule] for rule in SHARDED} == shards
    for rule in (
        "validate_data",
        "accept_data",
        "score_map_ap",
        "seed_sweep",
        "seed_table",
        "all",
    ):
        assert jobs[rule] == 1, rule
    assert jobs["train_icd"] == 2
    assert jobs["collect_seeds"] == len(icd_plan.variants(settings))  # one per seed set
    # real VOC: user data and weights, no synthetic stand-ins
    assert not {"synthesize_data", "pretrain_backbone", "measure_premise", "pretrain_resnet101"} & set(jobs)
    assert seconds < 4 * GOAL_SECONDS  # the goal is reported, not asserted tightly: the machine is shared

    small_jobs, _ = dry_run(tmp_path / "small", fabricate_layout(tmp_path / "small", dict.fromkeys(VOC_COUNTS, 3)))
    assert small_jobs == jobs, "a rule runs per image"  # the plan must not depend on how many images there are


@pytest.mark.slow
def test_coco_scale_dry_run_plans_as_for_three_images_and_never_reads_the_annotations(tmp_path, capsys):
    """122,218 image files (COCO 2014's labelled images) and annotation files that are not JSON: the plan is the
    one of 3 images per split, made without parsing them (rule convert_coco is their only reader)."""
    config = fabricate_coco_layout(tmp_path / "full", COCO_COUNTS)
    assert sum(1 for _ in (tmp_path / "full" / "coco" / "train2014").iterdir()) == 82_081
    jobs, seconds = dry_run(tmp_path / "full", config)
    with capsys.disabled():
        print(f"\nCOCO-scale dry run: {sum(jobs.values())} jobs in {seconds:.1f} s (goal <= {COCO_GOAL_SECONDS:.0f} s)")
    assert jobs["convert_coco"] == jobs["validate_data"] == 1
    assert not {"convert_sbd", "synthesize_data", "pretrain_backbone", "pretrain_resnet101"} & set(jobs)
    assert seconds < 4 * COCO_GOAL_SECONDS  # the goal is reported, not asserted tightly: the machine is shared
    small = tmp_path / "small"
    small_jobs, _ = dry_run(small, fabricate_coco_layout(small, dict.fromkeys(COCO_COUNTS, 3)))
    assert small_jobs == jobs, "a rule runs per image"
    annotations = tmp_path / "full" / "coco" / "annotations"
    assert {path.read_text() for path in annotations.iterdir()} == {NOT_JSON}
