"""The critical path of a finished Snakemake run, read from its log: which chain of jobs set the wall time.

    python benchmarks/critical_path.py [.snakemake/log/<run>.snakemake.log]   (default: the newest log)

Every job's start and end come from the log's timestamps, its inputs and outputs from the job's block. Walking
back from the job that finished last, each step goes to the input-producing job that finished last: the chain
that nothing could have shortened without shortening one of its jobs. Printed as a table, with the time each
job of the chain waited after its inputs were ready (a job waiting for a free core, not for its inputs) and,
per rule, the wall time all its jobs took: what to make faster, or run side by side, to shorten the run. Last, the
core time no job used (cores x wall - job time, from the log's "Provided cores" and each job's threads) and which
critical-path jobs ran while it went unused: the time a schedule cannot win back without work that could have run
then, and the wall time of a run that kept every core busy (job time / cores).
"""

from __future__ import annotations

import itertools
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_START = re.compile(r"^(?:local)?rule (\w+):$")
_FINISHED = re.compile(r"^Finished jobid: (\d+)")
_CORES = re.compile(r"^Provided cores: (\d+)$", re.MULTILINE)


@dataclass
class Job:
    rule: str
    jobid: int = -1
    start: datetime | None = None
    end: datetime | None = None
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    wildcards: str = ""
    threads: int = 1

    @property
    def name(self) -> str:
        return f"{self.rule}[{self.wildcards}]" if self.wildcards else self.rule

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


def parse_log(text: str) -> list[Job]:
    """The finished jobs of a Snakemake log, with their start and end times, inputs and outputs."""
    jobs: dict[int, Job] = {}
    stamp, current = None, None
    for line in text.splitlines():
        if found := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(found[1].split()), "%a %b %d %H:%M:%S %Y")
        elif found := _START.match(line):
            current = Job(found[1], start=stamp)
        elif current and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            if key in ("input", "output"):
                getattr(current, f"{key}s").extend(value.split(", "))
            elif key == "wildcards":
                current.wildcards = value
            elif key == "threads":
                current.threads = int(value)
            elif key == "jobid":
                current.jobid = int(value)
                jobs[current.jobid] = current
        elif found := _FINISHED.match(line):
            jobs[int(found[1])].end = stamp
            current = None
        elif not line.startswith("    "):
            current = None  # the job's block ended
    return [job for job in jobs.values() if job.start and job.end]


def producers(jobs: list[Job]) -> dict[int, list[Job]]:
    """{jobid: the jobs whose outputs it reads} (an input inside an output folder counts)."""
    made = {output.rstrip("/"): job for job in jobs for output in job.outputs}
    found = {}
    for job in jobs:
        sources = {}
        for path in job.inputs:
            candidate = path.rstrip("/")
            while candidate and candidate not in made:
                candidate = candidate.rpartition("/")[0]
            if candidate:
                sources[made[candidate].jobid] = made[candidate]
        found[job.jobid] = list(sources.values())
    return found


def critical_path(jobs: list[Job]) -> list[Job]:
    """From the job that finished last back to a job without producers, each time the latest-finishing producer."""
    sources = producers(jobs)
    path = [max(jobs, key=lambda job: (job.end, job.start))]
    while sources[path[-1].jobid]:
        path.append(max(sources[path[-1].jobid], key=lambda job: job.end))
    return path[::-1]


def provided_cores(text: str) -> int:
    """The cores Snakemake ran with (its "Provided cores" line; 1 when the log has none, as Snakemake's default)."""
    found = _CORES.search(text)
    return int(found[1]) if found else 1


def idle_core_seconds(jobs: list[Job], cores: int) -> list[tuple[datetime, datetime, float]]:
    """The intervals between consecutive job starts and ends, each with the core-seconds no job used in it."""
    moments = sorted({moment for job in jobs for moment in (job.start, job.end)})
    intervals = []
    for begin, end in itertools.pairwise(moments):
        busy = sum(min(job.threads, cores) for job in jobs if job.start <= begin and job.end >= end)
        intervals.append((begin, end, max(0, cores - busy) * (end - begin).total_seconds()))
    return intervals


def main(argv: list[str]) -> None:
    log = (
        Path(argv[0]) if argv else max(Path(".snakemake/log").glob("*.snakemake.log"), key=lambda p: p.stat().st_mtime)
    )
    text = log.read_text()
    jobs = parse_log(text)
    if not jobs:
        raise SystemExit(f"{log}: no finished jobs in this log")
    begin = min(job.start for job in jobs)
    wall = (max(job.end for job in jobs) - begin).total_seconds()
    path = critical_path(jobs)
    print(f"{log}: {len(jobs)} jobs, wall {wall / 60:.1f} min, job time {sum(j.seconds for j in jobs) / 60:.1f} min\n")
    print("| critical path job | starts at (min) | runs (s) | waited for a core (s) |")
    print("|---|---:|---:|---:|")
    ready = begin
    for job in path:
        offset = (job.start - begin).total_seconds() / 60
        waited = (job.start - ready).total_seconds()
        print(f"| {job.name} | {offset:.1f} | {job.seconds:.0f} | {waited:.0f} |")
        ready = job.end
    per_rule: dict[str, float] = {}
    for job in jobs:
        per_rule[job.rule] = per_rule.get(job.rule, 0.0) + job.seconds
    print("\n| rule | jobs' wall time, summed (s) |")
    print("|---|---:|")
    for rule, seconds in sorted(per_rule.items(), key=lambda item: -item[1]):
        print(f"| {rule} | {seconds:.0f} |")
    cores = provided_cores(text)
    idle = idle_core_seconds(jobs, cores)
    job_time = sum(min(job.threads, cores) * job.seconds for job in jobs)
    unused = sum(seconds for _, _, seconds in idle)
    print(f"\nIdle core time: {unused:.0f} s of {cores} cores x {wall:.0f} s; every core busy, the same jobs would")
    print(f"take {job_time / cores / 60:.1f} min. Idle while a critical-path job ran:\n")
    print("| critical path job | idle core time while it ran (s) |")
    print("|---|---:|")
    for job in path:
        during = sum(seconds for begin, end, seconds in idle if job.start <= begin and end <= job.end)
        print(f"| {job.name} | {during:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
