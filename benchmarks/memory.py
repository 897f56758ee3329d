"""Peak memory of each pipeline stage, and the size of the score files at PASCAL VOC scale.

Peak RSS comes from the `benchmark:` TSVs Snakemake writes under results/<run>/benchmarks/ (max_rss,
MiB; a sharded stage reports its largest shard). Stages that ran (they have a log) but have no
benchmark are listed. The score shards are measured as stored (float16, present classes only, at
feature resolution) and extrapolated to VOC train_aug: 10,582 images on the 513 canvas, whose
stride-8 features are 65 x 65.

    python benchmarks/memory.py [--results results/synthetic] [--voc-classes-per-image 1.5]
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

import numpy as np

from wsss.core.config import PROJECT_ROOT

VOC_TRAIN_AUG_IMAGES = 10_582
VOC_FEATURE_SIDE = (513 - 1) // 8 + 1  # the 513 canvas at output stride 8
MIB = 2**20


def stage_of(relative: Path) -> str:
    """superpixels/shard_3.tsv -> 'superpixels' (shards pooled); deeplab/train_vgg16_gt.tsv -> itself, less .tsv."""
    relative = relative.with_suffix("")
    return str(relative.parent) if re.fullmatch(r"shard_\d+", relative.name) else str(relative)


def peak_rss(benchmarks: Path) -> dict[str, dict]:
    """{stage: {"max_rss_mib", "jobs", "seconds"}}: the largest max_rss and the longest wall time over its jobs."""
    stages: dict[str, dict] = {}
    for path in sorted(benchmarks.rglob("*.tsv")):
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        name = stage_of(path.relative_to(benchmarks))
        stage = stages.setdefault(name, {"max_rss_mib": 0.0, "jobs": 0, "seconds": 0.0})
        for row in rows:
            stage["max_rss_mib"] = max(stage["max_rss_mib"], float(row["max_rss"]))
            stage["seconds"] = max(stage["seconds"], float(row["s"]))
        stage["jobs"] += 1
    return stages


def unbenchmarked_stages(results: Path) -> list[str]:
    """Stages with a log under results/<run>/logs/ but no benchmark TSV."""
    logged = {stage_of(p.relative_to(results / "logs")) for p in (results / "logs").rglob("*.log")}
    return sorted(logged - set(peak_rss(results / "benchmarks")))


def score_sizes(score_shards: list[Path]) -> dict:
    """What the score shards hold per image: raw and compressed bytes, classes, bytes per (class x feature pixel)."""
    images = raw = class_pixels = classes = 0
    dtypes = set()
    for path in score_shards:
        with np.load(path) as shard:
            for image_id in shard.files:
                maps = shard[image_id]  # (score maps, present classes, h, w)
                dtypes.add(str(maps.dtype))
                images += 1
                raw += maps.nbytes
                classes += maps.shape[1]
                class_pixels += maps.shape[1] * maps.shape[2] * maps.shape[3]
    if not images:
        raise SystemExit(f"no score maps in {[str(p) for p in score_shards]}: run the scores step first")
    return {
        "images": images,
        "dtypes": sorted(dtypes),
        "raw_bytes_per_image": raw / images,
        "file_bytes_per_image": sum(p.stat().st_size for p in score_shards) / images,
        "classes_per_image": classes / images,
        "bytes_per_class_pixel": raw / class_pixels,
    }


def voc_estimate(sizes: dict, classes_per_image: float) -> dict:
    """Raw bytes at VOC scale, and the compressed size if VOC compressed as the measured shards do."""
    raw = VOC_TRAIN_AUG_IMAGES * classes_per_image * VOC_FEATURE_SIDE**2 * sizes["bytes_per_class_pixel"]
    return {"raw_bytes": raw, "file_bytes": raw * sizes["file_bytes_per_image"] / sizes["raw_bytes_per_image"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=PROJECT_ROOT / "results" / "synthetic")
    parser.add_argument(
        "--voc-classes-per-image",
        type=float,
        default=1.5,
        help="mean present classes per VOC train_aug image (an assumption; about 1.5)",
    )
    args = parser.parse_args()

    stages = peak_rss(args.results / "benchmarks")
    print(f"peak RSS per stage ({args.results}/benchmarks)")
    print(f"{'stage':<28} {'jobs':>4} {'max_rss MiB':>12} {'wall s':>8}")
    for name, stage in stages.items():
        print(f"{name:<28} {stage['jobs']:>4} {stage['max_rss_mib']:>12.1f} {stage['seconds']:>8.1f}")
    missing = unbenchmarked_stages(args.results)
    print(f"stages that ran without a benchmark: {', '.join(missing) if missing else 'none'}")

    sizes = score_sizes(sorted((args.results / "networks" / "icd" / "scores").glob("shard_*.npz")))
    estimate = voc_estimate(sizes, args.voc_classes_per_image)
    print(
        f"\nscore shards: {sizes['images']} images, dtype {'/'.join(sizes['dtypes'])}, "
        f"{sizes['classes_per_image']:.2f} present classes per image"
    )
    print(
        f"  per image: {sizes['raw_bytes_per_image']:.0f} B raw, {sizes['file_bytes_per_image']:.0f} B on disk; "
        f"{sizes['bytes_per_class_pixel']:.1f} B per class x feature pixel"
    )
    print(
        f"VOC train_aug estimate ({VOC_TRAIN_AUG_IMAGES} images, {VOC_FEATURE_SIDE}x{VOC_FEATURE_SIDE} features, "
        f"{args.voc_classes_per_image:g} classes per image): {estimate['raw_bytes'] / MIB:.0f} MiB raw, "
        f"~{estimate['file_bytes'] / MIB:.0f} MiB compressed at the measured ratio"
    )


if __name__ == "__main__":
    main()
