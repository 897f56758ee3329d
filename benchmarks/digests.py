"""What the trainers' input digests cost on a VOC-scale training split (`wsss.core.digests`).

A trainer hashes everything it reads before it decides whether to resume: the training split's
images, its label maps (seeds or ground truth), superpixel shards and weights. This fabricates
VOC-sized files (10,582 JPEG-sized images of VOC's mean size, as many seed PNGs, a VGG16-sized
weights file) of random bytes and times the digests DeepLab takes before training, warm (files in
the page cache, as right after the step that wrote them) and, where the machine lets us drop the
page cache (root), cold.

    python benchmarks/digests.py [--scale 1.0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from wsss.core.digests import file_digest, files_digest

TRAIN_AUG = 10_582
JPEG_BYTES = 110_000  # VOC2012's 17,125 JPEGs take about 1.9 GB
SEED_BYTES = 3_000  # a palettised seed PNG of a 500x375 image
WEIGHTS_BYTES = 553_000_000  # torchvision's vgg16-397923af.pth


def fabricate(root: Path, count: int) -> tuple[list[Path], list[Path], Path]:
    images, seeds = root / "JPEGImages", root / "seeds"
    images.mkdir()
    seeds.mkdir()
    image_paths = [images / f"{i:06d}.jpg" for i in range(count)]
    seed_paths = [seeds / f"{i:06d}.png" for i in range(count)]
    for image, seed in zip(image_paths, seed_paths, strict=True):
        image.write_bytes(os.urandom(JPEG_BYTES))
        seed.write_bytes(os.urandom(SEED_BYTES))
    weights = root / "vgg16.pth"
    with open(weights, "wb") as handle:
        for _ in range(WEIGHTS_BYTES // 1_000_000):
            handle.write(os.urandom(1_000_000))
    return image_paths, seed_paths, weights


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of VOC's 10,582 training images")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    count = max(1, round(TRAIN_AUG * args.scale))
    with tempfile.TemporaryDirectory() as folder:
        images, seeds, weights = fabricate(Path(folder), count)
        gigabytes = (count * (JPEG_BYTES + SEED_BYTES) + WEIGHTS_BYTES) / 1e9
        steps = {
            f"images ({count} x {JPEG_BYTES // 1000} kB)": lambda: files_digest(images),
            f"seed PNGs ({count} x {SEED_BYTES // 1000} kB)": lambda: files_digest(seeds),
            f"weights ({WEIGHTS_BYTES // 1_000_000} MB)": lambda: file_digest(weights),
        }
        print(f"DeepLab's input digests on {gigabytes:.2f} GB, median of {args.repeat} (warm page cache):")
        print(f"| {'input':<32} | seconds |")
        print(f"|{'-' * 34}|---------|")
        total = 0.0
        for name, step in steps.items():
            seconds = statistics.median(timed(step) for _ in range(args.repeat))
            total += seconds
            print(f"| {name:<32} | {seconds:7.2f} |")
        print(f"| {'all, warm':<32} | {total:7.2f} |")
        if drop_page_cache():
            print(f"| {'all, cold (page cache dropped)':<32} | {sum(timed(step) for step in steps.values()):7.2f} |")
        else:
            print("(cold read not measured: dropping the page cache needs root)")


if __name__ == "__main__":
    main()
