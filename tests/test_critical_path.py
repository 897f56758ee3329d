"""benchmarks/critical_path.py on a hand-written Snakemake log: the chain that set the wall time."""

from __future__ import annotations

from benchmarks.critical_path import critical_path, parse_log


def block(stamp: str, rule: str, jobid: int, outputs: str, inputs: str = "", wildcards: str = "") -> str:
    lines = [f"[Wed Dec  2 {stamp} 2026]", f"rule {rule}:"]
    lines += [f"    input: {inputs}"] if inputs else []
    lines += [f"    output: {outputs}", f"    jobid: {jobid}"]
    lines += [f"    wildcards: {wildcards}"] if wildcards else []
    return "\n".join([*lines, "Shell command: true"])


def finished(stamp: str, jobid: int) -> str:
    return f"[Wed Dec  2 {stamp} 2026]\nFinished jobid: {jobid} (Rule: x)\n1 of 5 steps (20%) done"


LOG = "\n".join(
    [
        "Building DAG of jobs...",
        block("10:00:00", "data", 1, "r/data"),
        finished("10:00:10", 1),
        block("10:00:10", "fast", 2, "r/fast.txt", "r/data/images/a.jpg"),  # an input inside an output folder
        block("10:00:10", "slow", 3, "r/slow/shard_0.npz", "r/data", wildcards="shard=0"),
        finished("10:00:20", 2),
        finished("10:01:10", 3),
        block("10:01:30", "table", 4, "r/table.csv", "r/fast.txt, r/slow/shard_0.npz"),
        finished("10:01:40", 4),
    ]
)


def test_the_critical_path_follows_the_inputs_that_were_ready_last():
    jobs = parse_log(LOG)
    assert [(job.rule, job.seconds) for job in sorted(jobs, key=lambda job: job.jobid)] == [
        ("data", 10),
        ("fast", 10),
        ("slow", 60),
        ("table", 10),
    ]
    assert [job.name for job in critical_path(jobs)] == ["data", "slow[shard=0]", "table"]
