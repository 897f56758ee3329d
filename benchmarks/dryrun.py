"""Dry-run time of the whole DAG on a VOC- or COCO-scale layout: how long `snakemake -n` takes to plan a real run.

--source voc fabricates PASCAL VOC 2012 + SBD + saliency folders with VOC's image counts (10,582 train_aug,
1,449 val, 1,456 test) as empty files (a dry run never reads them); --source coco, MS-COCO 2014 as downloaded
with the counts of its labelled images (82,081 train2014, 40,137 val2014), annotation JSONs that are not JSON (a
plan that parsed them would fail: the conversion, rule convert_coco, is the only reader). Either comes with a real
config pointing at it and fabricated ImageNet weight files (torchvision's key names, whose layout tells the input
normalisation when the Snakefile is parsed, over empty tensors); then `snakemake -n` of the default target is timed,
beside the same for 3 images per split. Per-image work is sharded, so the job count stays in the tens whatever the
image count, and so must the time; the goal is <= 3 s for VOC, <= 15 s for COCO's 9 times as many images.

    python benchmarks/dryrun.py [--source voc|coco] [--scale 1.0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
VOC_COUNTS = {"train_aug": 10_582, "val": 1_449, "test": 1_456}
GOAL_SECONDS = 3.0
# COCO 2014's labelled images per folder (wsss.data.coco: the converted train and val splits).
COCO_COUNTS = {"train2014": 82_081, "val2014": 40_137}
COCO_GOAL_SECONDS = 15.0
# What the fabricated annotation files hold: not JSON, so a plan that read them would fail.
NOT_JSON = "planning must never read this file\n"


def voc_ids(counts: dict[str, int]) -> dict[str, list[str]]:
    """Distinct VOC-style ids ("2008_000123") per split."""
    ids, start = {}, 0
    for split, count in counts.items():
        ids[split] = [f"{2007 + (start + i) % 6}_{start + i:06d}" for i in range(count)]
        start += count
    return ids


def _touch_all(folder: Path, names) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).touch()


def _fabricate_weights(path: Path, keys) -> None:
    """A weights file with these key names over empty tensors: all a dry run reads of ImageNet weights."""
    torch.save({key: torch.empty(0) for key in keys}, path)


def torchvision_keys(backbone: str) -> list[str]:
    """The parameter names of torchvision's ImageNet VGG16 or ResNet101 file (BatchNorm buffers included)."""
    if backbone == "vgg16":
        convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
        return [
            f"{part}.{index}.{name}"
            for part, indices in (("features", convs), ("classifier", [0, 3, 6]))
            for index in indices
            for name in ("weight", "bias")
        ]
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = ["conv1.weight", *(f"bn1.{name}" for name in bn)]
    for layer, blocks in enumerate((3, 4, 23, 3), start=1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}"
            for index in (1, 2, 3):
                keys += [f"{prefix}.conv{index}.weight", *(f"{prefix}.bn{index}.{name}" for name in bn)]
            if block == 0:
                keys += [f"{prefix}.downsample.0.weight", *(f"{prefix}.downsample.1.{name}" for name in bn)]
    return [*keys, "fc.weight", "fc.bias"]


def fabricate_layout(root: Path, counts: dict[str, int] = VOC_COUNTS) -> dict:
    """Empty-file VOC, SBD and saliency trees with these split sizes; returns the real-VOC config."""
    ids = voc_ids(counts)
    voc, sbd, saliency = root / "VOCdevkit" / "VOC2012", root / "SBD", root / "saliency"
    every = [i for split in ids.values() for i in split]
    _touch_all(voc / "JPEGImages", (f"{i}.jpg" for i in every))
    _touch_all(voc / "Annotations", (f"{i}.xml" for i in ids["train_aug"] + ids["val"]))
    _touch_all(voc / "SegmentationClass", (f"{i}.png" for i in ids["val"]))
    _touch_all(sbd / "SegmentationClassAug", (f"{i}.png" for i in ids["train_aug"] + ids["val"]))
    _touch_all(saliency, (f"{i}.png" for i in every))
    lists = {voc / "ImageSets" / "Segmentation" / f"{split}.txt": ids[split] for split in ("val", "test")}
    lists[sbd / "ImageSets" / "SegmentationAug" / "train_aug.txt"] = ids["train_aug"]
    for path, split_ids in lists.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in split_ids))
    return {
        "run": "voc",
        "data": {"source": "voc", "voc_root": str(voc), "sbd_root": str(sbd), "saliency_root": str(saliency)},
        **_fabricate_weight_settings(root / "weights"),
    }


def fabricate_coco_layout(root: Path, counts: dict[str, int] = COCO_COUNTS) -> dict:
    """Empty-file COCO 2014 image folders with these counts ({folder: images}) and annotation files that are not
    JSON; returns the COCO config."""
    coco = root / "coco"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    for folder, count in counts.items():
        _touch_all(coco / folder, (f"COCO_{folder}_{number:012d}.jpg" for number in range(1, count + 1)))
        (coco / "annotations" / f"instances_{folder}.json").write_text(NOT_JSON)
    return {
        "run": "coco",
        "data": {"source": "coco", "coco_root": str(coco)},
        **_fabricate_weight_settings(root / "weights"),
    }


def _fabricate_weight_settings(folder: Path) -> dict:
    """Fabricated ImageNet VGG16 and ResNet101 files in `folder`, as the config settings naming them."""
    folder.mkdir(parents=True, exist_ok=True)
    _fabricate_weights(folder / "vgg16-397923af.pth", torchvision_keys("vgg16"))
    _fabricate_weights(folder / "resnet101-63fe2227.pth", torchvision_keys("resnet101"))
    return {
        "pretrain": {"weights": str(folder / "vgg16-397923af.pth")},
        "deeplab": {"weights": {"resnet101": str(folder / "resnet101-63fe2227.pth")}},
    }


def job_counts(dry_run_output: str) -> Counter:
    """{rule: jobs} from the "Job stats" table `snakemake -n` prints."""
    table = dry_run_output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    rows = (re.match(r"^(\w+)\s+(\d+)$", line.strip()) for line in table.splitlines())
    return Counter({row[1]: int(row[2]) for row in rows if row and row[1] != "total"})


def snakemake_command(workdir: Path, configfile: Path, *args: str) -> list[str]:
    """`python -m snakemake` on the project's Snakefile in `workdir`, `configfile` on top of config.yaml, then `args`
    (the tests run the workflow with it too)."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(PROJECT_ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(PROJECT_ROOT / "config.yaml"),
        str(configfile),
        *args,
    ]


def dry_run(workdir: Path, config: dict, *targets: str) -> tuple[Counter, float]:
    """Plan the DAG in `workdir` with `config` on top of config.yaml: ({rule: jobs}, seconds)."""
    configfile = workdir / f"{config['run']}.yaml"
    configfile.write_text(yaml.safe_dump(config))
    command = snakemake_command(workdir, configfile, "-n", *targets)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"snakemake -n failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return job_counts(result.stdout), seconds


# --source: (layout fabricator, full-scale counts, goal in seconds, name of the scale)
SOURCES = {
    "voc": (fabricate_layout, VOC_COUNTS, GOAL_SECONDS, "VOC-scale"),
    "coco": (fabricate_coco_layout, COCO_COUNTS, COCO_GOAL_SECONDS, "COCO-scale"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=sorted(SOURCES), default="voc", help="the dataset layout to fabricate")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the dataset's image counts")
    parser.add_argument("--repeat", type=int, default=3, help="dry runs to time (the median is reported)")
    args = parser.parse_args()
    fabricate, full_counts, goal, scale_name = SOURCES[args.source]
    counts = {split: max(1, round(count * args.scale)) for split, count in full_counts.items()}
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        config = fabricate(Path(folder) / "data", counts)
        fabrication = time.perf_counter() - start
        runs = [dry_run(Path(folder), config) for _ in range(args.repeat)]
        small = Path(folder) / "small"
        small_config = fabricate(small / "data", dict.fromkeys(full_counts, 3))
        small_runs = [dry_run(small, small_config) for _ in range(args.repeat)]
    jobs = runs[0][0]
    seconds = statistics.median(run[1] for run in runs)
    small_seconds = statistics.median(run[1] for run in small_runs)
    print(
        f"{scale_name} layout {counts} fabricated in {fabrication:.1f} s; `snakemake -n` of the default target, "
        f"median of {args.repeat}:"
    )
    print(f"| {'rule':<24} | {'jobs':>5} |")
    print(f"|{'-' * 26}|{'-' * 7}|")
    for rule, count in sorted(jobs.items()):
        print(f"| {rule:<24} | {count:>5} |")
    print(f"| {'total':<24} | {sum(jobs.values()):>5} |")
    print("| layout | jobs | dry run (median) | runs |\n|---|---|---|---|")
    for name, layout_runs, median in ((scale_name, runs, seconds), ("3 images per split", small_runs, small_seconds)):
        times = ", ".join(f"{run[1]:.1f}" for run in layout_runs)
        print(f"| {name} | {sum(layout_runs[0][0].values())} | {median:.1f} s | {times} s |")
    same = "the same job count" if small_runs[0][0] == jobs else "A DIFFERENT PLAN"
    print(
        f"{scale_name} dry run {seconds:.1f} s: {'within' if seconds <= goal else 'OVER'} the goal of "
        f"<= {goal:.0f} s; {seconds - small_seconds:+.1f} s against 3 images per split, {same}"
    )


if __name__ == "__main__":
    main()
