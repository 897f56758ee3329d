"""Superpixel throughput per core: Felzenszwalb alone vs the feature merge, on VOC-sized images.

The merge (region features from a 512 x 65 x 65 conv5_3 map, as VGG16 gives for the 513 canvas,
plus greedy merging to 64 regions) must not cost more than Felzenszwalb itself on 500 x 375 images.
The backbone forward is timed separately: on real data it runs on the GPU in the same job.

    python benchmarks/superpixels.py [--images 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # per-core figures

import numpy as np
import torch

from icd.superpixels import backbone_dense_features, felzenszwalb_regions, merge_regions, region_features
from wsss.core.config import load_config
from wsss.data.io import read_rgb
from wsss.data.synthetic import generate_dataset
from wsss.nets.backbones import VGG16DeepLab
from wsss.nets.normalisation import named

CANVAS = 513


def images(count: int) -> list[np.ndarray]:
    """Synthetic VOC images at VOC's typical 500 x 375 size."""
    sizes = {"num_train": count, "num_val": 1, "num_test": 1, "min_size": 375, "max_size": 500}
    # No OoD or extra set: unused here.
    options = load_config(overrides={"synthetic": {**sizes, "num_ood": 0, "num_extra": 0}})["synthetic"]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "VOC2012"
        generate_dataset(root, **options, progress=False)
        paths = sorted((root / "JPEGImages").glob("train_*.jpg"))
        return [np.ascontiguousarray(read_rgb(p)[:375, :500]) for p in paths]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    params = load_config(overrides={"data": {"source": "voc", "voc_root": "x"}, "pretrain": {"weights": "x"}})[
        "superpixels"
    ]
    rng = np.random.default_rng(0)
    model = VGG16DeepLab(width=1.0).eval()
    timings = {"felzenszwalb": 0.0, "merge (features + greedy)": 0.0, "backbone conv5 (full width, CPU)": 0.0}
    regions_before, regions_after = [], []
    for image in images(args.images):
        start = time.perf_counter()
        regions = felzenszwalb_regions(image, sigma=params["sigma"], scale=params["scale"], min_size=params["min_size"])
        timings["felzenszwalb"] += time.perf_counter() - start
        dense = rng.standard_normal((512, 65, 65)).astype(np.float32)
        start = time.perf_counter()
        features, sizes = region_features(regions, dense, CANVAS)
        merged = merge_regions(regions, features, sizes, params["max_regions"])
        timings["merge (features + greedy)"] += time.perf_counter() - start
        regions_before.append(regions.max() + 1)
        regions_after.append(merged.max() + 1)
    start = time.perf_counter()
    backbone_dense_features(model, images(1)[0], CANVAS, named("torchvision"))  # VOC runs' ImageNet weights
    timings["backbone conv5 (full width, CPU)"] = (time.perf_counter() - start) * args.images

    print(
        f"{args.images} images of 500x375, one core; Felzenszwalb sigma {params['sigma']}, k {params['scale']}, "
        f"min_size {params['min_size']}: {np.mean(regions_before):.0f} regions -> {np.mean(regions_after):.0f}"
    )
    print(f"| {'step':<34} | {'ms / image':>10} | {'images / s':>10} |")
    print(f"|{'-' * 36}|{'-' * 12}|{'-' * 12}|")
    for name, seconds in timings.items():
        per_image = seconds / args.images
        print(f"| {name:<34} | {per_image * 1000:>10.1f} | {1 / per_image:>10.2f} |")
    ratio = timings["merge (features + greedy)"] / timings["felzenszwalb"]
    print(f"merge / felzenszwalb = {ratio:.2f} ({'within' if ratio <= 1 else 'OVER'} the goal of <= 1)")


if __name__ == "__main__":
    main()
