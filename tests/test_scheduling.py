"""The scheduling priorities of the default run (workflow/rules/common.smk), and of one with further DeepLab rounds:
read from Snakemake's own dry run of config.yaml, every job with what it reads, writes and the priority Snakemake
gives it."""

from __future__ import annotations

import re

import pytest

from tests.workflow_helpers import snakemake

JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.MULTILINE)


def _field(block: str, name: str) -> str:
    found = re.search(rf"^    {name}: (.*)$", block, re.MULTILINE)
    return found.group(1) if found else ""


def plan(workdir, config: dict) -> list[dict]:
    """Each job of a dry run of config.yaml with `config` on top: rule, wildcards, inputs, outputs, priority (0 if
    unset)."""
    result = snakemake(workdir, "-n", config=config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = [
        {
            "rule": rule,
            "wildcards": _field(block, "wildcards"),
            "inputs": [path for path in _field(block, "input").split(", ") if path],
            "outputs": [path for path in _field(block, "output").split(", ") if path],
            "priority": int(_field(block, "priority") or 0),
        }
        for rule, block in JOB.findall(result.stdout)
    ]
    assert len(jobs) > 50
    return jobs


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> list[dict]:
    """The default configuration's jobs (`plan`)."""
    return plan(tmp_path_factory.mktemp("plan"), {})


def inverted_rules(jobs: list[dict]) -> list[tuple[str, str]]:
    """(producer, consumer) rule pairs of `jobs` where a job ranks above a job it waits for."""
    producer_of = {output: job for job in jobs for output in job["outputs"]}
    edges = [
        (producer_of[path], job)
        for job in jobs
        for path in job["inputs"]
        if path in producer_of and producer_of[path] is not job
    ]
    assert len(edges) > 100
    return sorted(
        {(producer["rule"], job["rule"]) for producer, job in edges if producer["priority"] < job["priority"]}
    )


def test_no_job_ranks_above_a_job_it_waits_for(planned):
    """Priorities follow the work still ahead: whatever a job feeds can only have less ahead of it. A consumer ranked
    above its producer would also say the scheme is not what common.smk describes."""
    assert inverted_rules(planned) == []


def test_the_long_chains_come_first_and_the_reports_last(planned):
    priority = {}
    for job in planned:
        priority.setdefault(job["rule"], {})[job["wildcards"]] = job["priority"]
    trainings = priority["train_deeplab"]
    resnet = {value for key, value in trainings.items() if "backbone=resnet101" in key}
    vgg = {value for key, value in trainings.items() if "backbone=vgg16" in key}
    assert len(resnet) == len(vgg) == 1 and min(resnet) > max(vgg) > max(priority["predict_deeplab"].values())
    seeds = priority["make_seeds"]
    for_deeplab = [value for key, value in seeds.items() if re.search(r"family=(icd_crf|cam|icd_sal),", key)]
    others = [value for key, value in seeds.items() if re.search(r"family=(icd|icd_no_td|cam_crf),", key)]
    assert len(for_deeplab) == 6 and len(others) == 6
    assert min(for_deeplab) > max(resnet) and max(others) == 0
    assert set(priority["train_icd"].values()) == {priority["pretrain_backbone"][""]} == {10}
    # The primary network's scores feed DeepLab's seeds; the ablation network's only tables.
    scores = priority["infer_scores"]
    assert {value for key, value in scores.items() if "network=icd," in key} == {8}
    assert {value for key, value in scores.items() if "network=no_td," in key} == {0}
    for report in ("seed_table", "seed_figure", "score_map_ap", "training_curves", "evaluate_deeplab"):
        assert set(priority[report].values()) == {0}, report


DEEPLAB_RULES = ("train_deeplab", "predict_deeplab", "predict_deeplab_train", "evaluate_deeplab")


def test_further_rounds_add_their_jobs_per_backbone_and_round_seed_set_and_rank_after_round_one(planned, tmp_path):
    """deeplab.rounds 3 on icd_crf: per backbone, rounds 1 and 2 predict the training split, and rounds 2 and 3 train,
    predict and are evaluated, each on the same backbone's previous round; round 1's jobs stay as they were, and every
    further round's job ranks below every round-1 DeepLab job."""
    jobs = plan(tmp_path, {"deeplab": {"rounds": 3, "round_seeds": ["icd_crf"]}})
    before = [job for job in planned if job["rule"] in DEEPLAB_RULES]
    after = [job for job in jobs if job["rule"] in DEEPLAB_RULES]
    assert all(job in after for job in before) and not any(job["rule"] == "predict_deeplab_train" for job in before)
    added = [job for job in after if job not in before]
    backbones = ("vgg16", "resnet101")
    assert sorted((job["rule"], job["wildcards"]) for job in added) == sorted(
        [
            ("predict_deeplab_train", f"backbone={b}, seeds={run}")
            for b in backbones
            for run in ("icd_crf", "icd_crf_round2")
        ]
        + [
            (rule, f"backbone={b}, seeds=icd_crf_round{r}")
            for rule in ("train_deeplab", "predict_deeplab", "evaluate_deeplab")
            for b in backbones
            for r in (2, 3)
        ]
    )
    inputs = {job["wildcards"]: job["inputs"] for job in added if job["rule"] == "train_deeplab"}
    deeplab = "results/synthetic/deeplab"
    assert f"{deeplab}/vgg16/icd_crf/train_labels" in inputs["backbone=vgg16, seeds=icd_crf_round2"]
    assert f"{deeplab}/resnet101/icd_crf_round2/train_labels" in inputs["backbone=resnet101, seeds=icd_crf_round3"]
    assert {job["priority"] for job in added if job["rule"] != "evaluate_deeplab"} == {1}
    assert min(job["priority"] for job in before if job["rule"] != "evaluate_deeplab") > 1
    assert inverted_rules(jobs) == []


def test_a_further_round_of_the_ground_truth_stops_the_plan_naming_the_choices(tmp_path):
    result = snakemake(tmp_path, "-n", config={"deeplab": {"rounds": 2, "round_seeds": ["gt"]}})
    assert result.returncode != 0
    assert "deeplab.round_seeds names 'gt'" in result.stdout + result.stderr
    assert "choose among ['icd_crf', 'icd_sal']" in result.stdout + result.stderr
