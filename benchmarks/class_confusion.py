"""How often another present class outscores a class on its own pixels, in the score maps of a finished run.

The official SPRefine (icd.model.refine_with_superpixels) gives a superpixel of a multi-class image to the
class whose score, divided at each pixel by the largest over classes, averages highest inside it. That
compares classes' raw scores, so it needs each class to score higher than the others on its own object.
This prints, over the ground-truth pixels of each present class of the multi-class training images, the
share where another present class scores higher: raw (what the official rule compares) and after
dividing each class by its maximum over the image (the earlier per-class rule); and the share where
another class, or the class itself, scores positive. Issue 13 found the first at 0.29 on synthetic data
whose classes shared one grey body, and 0.02 once the bodies were tinted (`synthetic.body_tint`).

    python benchmarks/class_confusion.py results/synthetic [--map bottom_up]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from icd.score_maps import SCORE_MAPS, scored_training_images


def confusion(results: Path, score_map: str, canvas: int) -> dict[str, float]:
    """The four shares (see the module docstring) over the multi-class training images of `results`."""
    dataset = json.loads((results / "data" / "dataset.json").read_text())
    score_shards = sorted(str(path) for path in (results / "networks" / "icd" / "scores").glob("shard_*.npz"))
    index = SCORE_MAPS.index(score_map)
    counts = np.zeros(5)  # pixels, other higher raw, other higher per-class-normalised, other positive, own positive
    images = scored_training_images(dataset, score_shards, canvas=canvas, description="class confusion")
    for _, gt, maps, classes in images:
        if len(classes) < 2:
            continue
        scores = maps[index]
        normalised = np.maximum(scores, 0) / np.maximum(scores.max(axis=(1, 2), keepdims=True), 1e-5)
        for position, class_index in enumerate(classes):
            own = gt == class_index
            others = [k for k in range(len(classes)) if k != position]
            counts += [
                own.sum(),
                (scores[others].max(0) > scores[position])[own].sum(),
                (normalised[others].max(0) > normalised[position])[own].sum(),
                (scores[others].max(0) > 0)[own].sum(),
                (scores[position] > 0)[own].sum(),
            ]
    shares = counts[1:] / max(counts[0], 1)
    return dict(
        zip(
            (
                "other class higher (raw)",
                "other class higher (per-class normalised)",
                "other class positive",
                "own class positive",
            ),
            shares,
            strict=True,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a run's results folder, e.g. results/synthetic")
    parser.add_argument("--map", default="bottom_up", choices=SCORE_MAPS, help="which score map (default: S)")
    parser.add_argument("--canvas", type=int, default=129, help="seeds.inference_size of the run")
    args = parser.parse_args()
    results = args.results.resolve()
    os.chdir(results.parents[1])  # dataset.json holds paths relative to the project folder
    print(f"{args.map} scores of {args.results}, own pixels of each class on multi-class training images:")
    print("| share | value |\n|---|---|")
    for name, value in confusion(results, args.map, args.canvas).items():
        print(f"| {name} | {value:.3f} |")


if __name__ == "__main__":
    main()
