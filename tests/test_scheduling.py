"""The scheduling priorities of the default run (workflow/rules/common.smk): read from Snakemake's own dry run of
config.yaml, every job with what it reads, writes and the priority Snakemake gives it."""

from __future__ import annotations

import re

import pytest

from tests.workflow_helpers import snakemake

JOB = re.compile(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", re.MULTILINE)


def _field(block: str, name: str) -> str:
    found = re.search(rf"^    {name}: (.*)$", block, re.MULTILINE)
    return found.group(1) if found else ""


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> list[dict]:
    """Each job of the default configuration's dry run: rule, wildcards, inputs, outputs, priority (0 if unset)."""
    result = snakemake(tmp_path_factory.mktemp("plan"), "-n", config={})
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


def test_no_job_ranks_above_a_job_it_waits_for(planned):
    """Priorities follow the work still ahead: whatever a job feeds can only have less ahead of it. A consumer ranked
    above its producer would also say the scheme is not what common.smk describes."""
    producer_of = {output: job for job in planned for output in job["outputs"]}
    edges = [
        (producer_of[path], job)
        for job in planned
        for path in job["inputs"]
        if path in producer_of and producer_of[path] is not job
    ]
    assert len(edges) > 100
    inverted = [
        (f"{producer['rule']}[{producer['wildcards']}]", f"{job['rule']}[{job['wildcards']}]")
        for producer, job in edges
        if producer["priority"] < job["priority"]
    ]
    assert sorted({(a.split("[")[0], b.split("[")[0]) for a, b in inverted}) == []


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
