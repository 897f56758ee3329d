"""benchmarks/gpu.py: its --tiny run takes every code path on the CPU, and its budget planner keeps order and skips
what does not fit. The GPU figures themselves come only from a run on a GPU."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.gpu import BudgetPlanner, Item, paper_config, run_ddp, tiny_sizes, unvalidated_paper_config

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NETWORKS = ("ICD", "DeepLab VGG16", "DeepLab ResNet101")


def tables(output: str) -> dict[str, list[dict[str, str]]]:
    """{title: rows as {column: cell}} of the markdown tables printed under '## title' (a table printed in
    several pieces is joined)."""
    found: dict[str, list[dict[str, str]]] = {}
    title, columns = None, None
    for line in output.splitlines():
        if line.startswith("## "):
            title, columns = line[3:], None
        elif title and line.startswith("|") and not line.startswith("|-"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            if columns is None:
                columns = cells
            else:
                found.setdefault(title, []).append(dict(zip(columns, cells, strict=True)))
        elif not line.startswith("|"):
            title = None
    return found


def table(found: dict, prefix: str) -> list[dict[str, str]]:
    return next(rows for title, rows in found.items() if title.startswith(prefix))


@pytest.fixture(scope="module")
def tiny_run():
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--tiny", "--budget-s", "60"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout, time.perf_counter() - start


def test_tiny_run_checks_every_network_against_float64_within_tolerance(tiny_run):
    rows = table(tables(tiny_run[0]), "Correctness")
    quantities = {(row["network"], row["quantity"]) for row in rows}
    for quantity in (
        "bottom-up scores Ŝ",
        "sign-flip EMA",
        "sign-flipped S",
        "refined S' (SPRefine)",
        "top-down target n",
        "adapted S''",
        "loss bottom-up",
        "loss top-down",
        "grad directions",
    ):
        assert ("ICD", quantity) in quantities
    for network in NETWORKS[1:]:
        assert {(network, quantity) for quantity in ("logits", "loss", "grad head", "grad first conv")} <= quantities
    for row in rows:
        assert "OVER" not in row["fp32"] + row["bf16"], row
        figure = row["fp32"].removeprefix("l2 ").split()[0]
        assert float(figure) < 1e-3, row  # float32 vs float64 on the CPU: nothing near a precision limit


def test_tiny_run_times_training_and_prices_the_schedules(tiny_run):
    output, seconds = tiny_run
    found = tables(output)
    training = table(found, "Training steps")
    for network in NETWORKS:
        fp32 = [
            row
            for row in training
            if row["network"] == network
            and row["precision"] == "fp32"
            and row["layout"] == "NCHW"
            and row["compiled"] == "no"
        ]
        assert fp32 and float(fp32[0]["images/s"]) > 0, network
    assert {row["step"].split(" (")[0] for row in table(found, "Score inference")} == {"score inference", "seed CRF"}
    assert "DDP: skipped (the device is cpu; a two-process DDP step needs >= 2 GPUs)" in output
    schedules = {row["stage"]: row for row in table(found, "Paper schedules")}
    assert set(schedules) == {"ICD training", *NETWORKS[1:], "score inference", "seed CRF"}
    assert schedules["ICD training"]["schedule"] == "20 epochs x 330 it, batch 32"
    assert schedules["DeepLab ResNet101"]["schedule"] == "20,000 it, batch 10"
    assert all(row["one run"] and row["total"] for row in schedules.values()), schedules
    budget = table(found, "Budget")
    assert [row["item"] for row in budget][:4] == [
        "matmul peak",
        "check ICD",
        "check DeepLab VGG16",
        "check DeepLab ResNet101",
    ]  # most valuable first
    assert {row["outcome"] for row in budget if row["item"].endswith("compiled")} == {"skipped"}  # minutes on a CPU
    assert seconds < 90


def test_schema_defaults_stand_in_for_the_validated_config_where_snakemake_is_missing():
    validated, unvalidated = paper_config(), unvalidated_paper_config()
    for section in ("model", "icd", "deeplab", "seeds", "superpixels", "crf"):
        assert unvalidated[section] == validated[section], section


def test_planner_keeps_order_and_skips_what_does_not_fit():
    now = [0.0]
    ran = []

    def item(name: str, cost: float) -> Item:
        def run():
            ran.append(name)
            now[0] += cost

        return Item(name, run, report=lambda text: None, estimate_s=lambda: cost)

    planner = BudgetPlanner(10.0, clock=lambda: now[0])
    planner.run([item("a", 3), item("b", 5), item("c", 4), item("d", 1), item("e", 2)])
    assert ran == ["a", "b", "d"]  # c would end at 12 s; d still fits after it; e would end at 11 s
    assert planner.outcomes == {"a": "done", "b": "done", "c": "skipped", "d": "done", "e": "skipped"}


def test_planner_cuts_off_an_overrunning_item_and_goes_on_after_a_failure():
    reports = {}

    def failing():
        raise RuntimeError("CUDA out of memory\nmore detail")

    def report(name):
        return lambda text: reports.setdefault(name, text)

    planner = BudgetPlanner(30.0)
    planner.run(
        [
            Item("slow", lambda: time.sleep(5), report("slow"), limit_s=0.2),
            Item("failing", failing, report("failing")),
            Item("last", lambda: None, report("last")),
        ]
    )
    assert planner.outcomes == {"slow": "cut off", "failing": "failed", "last": "done"}
    assert reports["failing"] == "failed: RuntimeError: CUDA out of memory"


@pytest.mark.slow
def test_ddp_step_on_two_cpu_processes_keeps_ranks_identical():
    """The DDP item runs only on >= 2 GPUs; over gloo its code runs here: two ranks, one step each, same weights."""
    config = paper_config()
    step_s, drift = run_ddp(2, "gloo", config, tiny_sizes(config), "fp32")
    assert step_s > 0
    assert drift == 0.0  # averaged gradients and the all-reduced sign-flip statistics: the same step on both ranks
