"""benchmarks/critical_path.py on a hand-written Snakemake log: the chain that set the wall time."""

from __future__ import annotations

from datetime import timedelta

from benchmarks.critical_path import critical_path, idle_core_seconds, parse_log, provided_cores


def block(
    stamp: str, rule: str, jobid: int, outputs: str, inputs: str = "", wildcards: str = "", threads: int = 1
) -> str:
    lines = [f"[Wed Dec  2 {stamp} 2026]", f"rule {rule}:"]
    lines += [f"    input: {inputs}"] if inputs else []
    lines += [f"    output: {outputs}", f"    jobid: {jobid}"]
    lines += [f"    wildcards: {wildcards}"] if wildcards else []
    lines += [f"    threads: {threads}"] if threads > 1 else []  # Snakemake writes the line only above 1
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


def test_idle_core_time_is_what_a_second_by_second_count_of_busy_cores_leaves():
    """Three cores; a 2-thread job, a 4-thread one (scaled down to the 3 cores, as Snakemake does) and a gap with no
    job at all; the reference counts, second by second, the cores the running jobs hold."""
    log = "\n".join(
        [
            "Provided cores: 3",
            block("10:00:00", "a", 1, "r/a"),
            block("10:00:00", "b", 2, "r/b", threads=2),
            finished("10:00:30", 2),
            finished("10:00:50", 1),
            block("10:01:10", "c", 3, "r/c", "r/a, r/b", threads=4),
            finished("10:01:40", 3),
        ]
    )
    jobs = parse_log(log)
    cores = provided_cores(log)
    assert cores == 3 and provided_cores(LOG) == 1
    assert {job.rule: job.threads for job in jobs} == {"a": 1, "b": 2, "c": 4}
    begin = min(job.start for job in jobs)
    busy_per_second = [
        min(
            cores,
            sum(min(job.threads, cores) for job in jobs if job.start <= begin + timedelta(seconds=second) < job.end),
        )
        for second in range(100)
    ]
    expected = sum(cores - busy for busy in busy_per_second)
    assert expected == 30 * 0 + 20 * 2 + 20 * 3 + 30 * 0  # a + b, then a alone, then nothing, then c
    intervals = idle_core_seconds(jobs, cores)
    assert sum(seconds for _, _, seconds in intervals) == expected
    # the idle time inside job a's run: its 20 s alone, 2 cores free
    assert sum(seconds for start, end, seconds in intervals if jobs[0].start <= start and end <= jobs[0].end) == 40
