"""The VOC-scale dry-run benchmark: the DAG plans in seconds and its size does not grow with the images."""

from __future__ import annotations

import time

import pytest

import icd.workflow as icd_plan
from benchmarks.dryrun import GOAL_SECONDS, VOC_COUNTS, dry_run, fabricate_layout
from wsss.core.config import load_config

SHARDED = ("superpixels", "infer_scores", "infer_scores_without_top_down", "make_seeds")


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
        "infer_scores": settings["seeds"]["shards"],
        "infer_scores_without_top_down": settings["seeds"]["shards"],
        "make_seeds": settings["seeds"]["shards"] * len(icd_plan.families(settings)),
    }
    assert {rule: jobs[rule] for rule in SHARDED} == shards
    for rule in (
        "validate_data",
        "accept_data",
        "train_icd",
        "train_icd_without_top_down",
        "score_map_ap",
        "seed_sweep",
        "seed_table",
        "all",
    ):
        assert jobs[rule] == 1, rule
    assert jobs["collect_seeds"] == len(icd_plan.variants(settings))  # one per seed set
    # real VOC: user data and weights, no synthetic stand-ins
    assert not {"synthesize_data", "pretrain_backbone", "measure_premise", "pretrain_resnet101"} & set(jobs)
    assert seconds < 4 * GOAL_SECONDS  # the goal is reported, not asserted tightly: the machine is shared

    small_jobs, _ = dry_run(tmp_path / "small", fabricate_layout(tmp_path / "small", dict.fromkeys(VOC_COUNTS, 3)))
    assert small_jobs == jobs, "a rule runs per image"  # the plan must not depend on how many images there are
