"""Seed CRF per core: the official 21-label call (`crf_official`) vs the reduced one (`refine_seed`).

Synthetic VOC images cropped to 500 x 375 with seeds made from their GT masks (eroded classes, a
random 255 band, 255 speckle and a little label noise: 2-4 present labels, background included).
Goals: refine_seed >= 5x faster than crf_official, >= 99.5 % pixel agreement.

    python benchmarks/crf.py [--images 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # per-core figures; before numpy is imported

import numpy as np

from icd.config import load_config
from icd.crf import crf_official, refine_seed
from icd.data.classes import IGNORE_LABEL
from icd.data.io import read_mask, read_rgb
from icd.data.synthetic import generate_dataset

HEIGHT, WIDTH = 375, 500
SPEED_GOAL, AGREEMENT_GOAL = 5.0, 0.995


def _erode(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary erosion by a (2r+1)^2 square, with shifted minima (no scipy)."""
    out = mask.copy()
    padded = np.pad(mask, radius, constant_values=False)
    h, w = mask.shape
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out &= padded[dy:dy + h, dx:dx + w]
    return out


def make_seed(rng: np.random.Generator, gt: np.ndarray) -> np.ndarray:
    """A seed that looks like a CAM-derived one: eroded GT regions, a 255 band, 255 speckle, label noise."""
    seed = np.full(gt.shape, IGNORE_LABEL, dtype=np.uint8)
    labels = [v for v in np.unique(gt) if v != IGNORE_LABEL]
    for label in labels:
        seed[_erode(gt == label, int(rng.integers(3, 9)))] = label
    h, w = gt.shape
    if rng.random() < 0.5:  # a random band of ignore across the image
        y = int(rng.integers(0, h - 40))
        seed[y:y + int(rng.integers(20, 60))] = IGNORE_LABEL
    else:
        x = int(rng.integers(0, w - 40))
        seed[:, x:x + int(rng.integers(20, 60))] = IGNORE_LABEL
    seed[rng.random(gt.shape) < 0.05] = IGNORE_LABEL
    noisy = rng.random(gt.shape) < 0.01
    seed[noisy] = rng.choice(np.asarray(labels, dtype=np.uint8), size=int(noisy.sum()))
    return seed


def samples(count: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image, seed) pairs from the synthetic val split, at 500 x 375."""
    options = load_config(overrides={"synthetic": {"num_train": 1, "num_val": count, "num_test": 1,
                                                   "min_size": HEIGHT, "max_size": WIDTH}})["synthetic"]
    rng = np.random.default_rng(seed)
    out = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "VOC2012"
        generate_dataset(root, **options, progress=False)
        ids = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
        for image_id in ids[:count]:
            image = read_rgb(root / "JPEGImages" / f"{image_id}.jpg")[:HEIGHT, :WIDTH]
            gt = read_mask(root / "SegmentationClass" / f"{image_id}.png")[:HEIGHT, :WIDTH]
            out.append((np.ascontiguousarray(image), make_seed(rng, gt)))
    return out


def crf_params() -> dict:
    """The config's CRF section: exactly icd.crf's keyword arguments."""
    return load_config()["crf"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10)
    args = parser.parse_args()
    params = crf_params()
    data = samples(args.images)
    crf_official(*data[0], **params)  # warm-up (imports, allocator)
    refine_seed(*data[0], **params)

    print(f"{args.images} images of {WIDTH}x{HEIGHT}, one core; CRF {params}")
    print(f"| {'image':>5} | {'labels':>6} | {'official ms':>11} | {'reduced ms':>10} | {'speed-up':>8} | {'agreement':>9} |")
    print(f"|{'-' * 7}|{'-' * 8}|{'-' * 13}|{'-' * 12}|{'-' * 10}|{'-' * 11}|")
    total_official = total_reduced = 0.0
    agreements = []
    for index, (image, seed) in enumerate(data):
        start = time.perf_counter()
        official = crf_official(image, seed, **params)
        middle = time.perf_counter()
        reduced = refine_seed(image, seed, **params)
        end = time.perf_counter()
        total_official += middle - start
        total_reduced += end - middle
        agreements.append(float((official == reduced).mean()))
        present = np.union1d([0], np.setdiff1d(np.unique(seed), [IGNORE_LABEL])).size
        print(f"| {index:>5} | {present:>6} | {(middle - start) * 1000:>11.1f} | {(end - middle) * 1000:>10.1f} "
              f"| {(middle - start) / (end - middle):>7.2f}x | {agreements[-1] * 100:>8.3f}% |")
    speed = total_official / total_reduced
    n = len(data)
    print(f"| {'all':>5} | {'':>6} | {total_official / n * 1000:>11.1f} | {total_reduced / n * 1000:>10.1f} "
          f"| {speed:>7.2f}x | {np.mean(agreements) * 100:>8.3f}% |")
    print(f"speed-up {speed:.2f}x: goal >= {SPEED_GOAL:g}x {'MET' if speed >= SPEED_GOAL else 'NOT MET'}")
    print(f"agreement mean {np.mean(agreements) * 100:.3f}%, min {min(agreements) * 100:.3f}%: goal >= "
          f"{AGREEMENT_GOAL * 100:g}% {'MET' if min(agreements) >= AGREEMENT_GOAL else 'NOT MET'}")


if __name__ == "__main__":
    main()
