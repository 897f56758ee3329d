"""DeepLab's test-time CRF on a finished run's models: deeplab-pytorch's pydensecrf call against the engine the
pipeline runs (`deeplab.infer.crf_refine`, wsss.crf.densecrf), label agreement, val mIoU and CPU time per image.

For every trained DeepLab (round 1 and further rounds) under `<results>/deeplab/`, each eval-split image's class
probabilities are computed once (`deeplab.test_scales`, flip off, as the run's config gives them), then refined
by both CRFs with the run's `deeplab.crf` settings (`--bilateral-sxy` overrides its bilateral range, e.g. 67 for
deeplab-pytorch's own). Both run single-threaded on the same probabilities; a call's cost is its CPU time. Goals
(issue 19): labels agree on >= 99.5 % of pixels, mIoU within 0.1 point, the engine cheaper.

    python benchmarks/deeplab_crf.py [--results results/synthetic] [--config config.yaml ...] [--images N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # per-core figures; before numpy is imported

import numpy as np
import torch

from deeplab.infer import class_probabilities, crf_refine, crf_unary, load_trained
from wsss.core.cli import read_json
from wsss.core.config import load_config
from wsss.crf.refine import pydensecrf_marginals
from wsss.crf.settings import CRFSettings
from wsss.data.classes import ClassList
from wsss.data.io import read_mask, read_rgb
from wsss.data.voc import VOCPaths
from wsss.metrics import confusion_matrix, mean_iou

AGREEMENT_GOAL, MIOU_GOAL = 0.995, 0.1


def pydensecrf_labels(image: np.ndarray, probabilities: np.ndarray, settings: CRFSettings) -> np.ndarray:
    """deeplab-pytorch's call: unary -log p (p clipped at 1e-5), pydensecrf's mean-field, argmax."""
    marginals = pydensecrf_marginals(np.require(image, np.uint8, ["C", "W"]), crf_unary(probabilities), settings)
    return marginals.argmax(axis=0)


def compare(model_path: Path, dataset: dict, settings: CRFSettings, scales, images: int | None) -> dict:
    """One model's row: mIoU raw / pydensecrf / engine, pixel agreement, CPU ms per image of each CRF."""
    net, normalise = load_trained(model_path)
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["eval"]
    num_classes = ClassList.of_dataset(dataset).num_classes
    confusion = {"raw": 0, "pydensecrf": 0, "engine": 0}
    seconds = {"pydensecrf": 0.0, "engine": 0.0}
    agreeing = pixels = 0
    ids = dataset["splits"][split][:images]
    for image_id in ids:
        image = read_rgb(paths.image(image_id))
        truth = read_mask(paths.ground_truth(split, image_id), num_classes)
        probabilities = class_probabilities(net, image, normalise=normalise, scales=scales)
        labels = {"raw": probabilities.argmax(axis=0)}
        for name, function in (("pydensecrf", pydensecrf_labels), ("engine", crf_refine)):
            start = time.process_time()
            labels[name] = function(image, probabilities, settings)
            seconds[name] += time.process_time() - start
        for name, predicted in labels.items():
            confusion[name] = confusion[name] + confusion_matrix(truth, predicted, num_classes)
        agreeing += int((labels["pydensecrf"] == labels["engine"]).sum())
        pixels += labels["engine"].size
    return {
        **{f"miou_{name}": 100 * mean_iou(matrix) for name, matrix in confusion.items()},
        "agreement": agreeing / pixels,
        **{f"ms_{name}": 1000 * total / len(ids) for name, total in seconds.items()},
    }


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default="results/synthetic", help="the run's results folder")
    parser.add_argument("--config", nargs="+", default=[], help="the run's config files (default: config.yaml)")
    parser.add_argument("--images", type=int, help="only the first N eval images")
    parser.add_argument("--bilateral-sxy", type=float, help="the CRF's bilateral range instead of the config's")
    args = parser.parse_args()
    torch.set_num_threads(1)
    deeplab = load_config(*args.config)["deeplab"]
    crf = {**deeplab["crf"], **({"bilateral_sxy": args.bilateral_sxy} if args.bilateral_sxy else {})}
    settings = CRFSettings.from_config(crf, "deeplab.crf")
    results = Path(args.results)
    dataset = read_json(results / "data" / "dataset.json")
    models = sorted((results / "deeplab").glob("*/*/model.pt"))
    if not models:
        sys.exit(f"{results / 'deeplab'}: no trained DeepLab (model.pt) to compare on. Run the pipeline first.")
    print(f"{results}: {len(models)} models, CRF {crf}, {os.cpu_count()} CPUs\n")
    header = ("model", "raw", "pydensecrf", "engine", "agreement %", "pydensecrf ms", "engine ms", "speed-up")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    # Load the engine's compiled kernels (numba's cache) before anything is timed.
    crf_refine(np.zeros((8, 8, 3), np.uint8), np.full((2, 8, 8), 0.5, np.float32), settings)
    rows = []
    for path in models:
        row = compare(path, dataset, settings, deeplab["test_scales"], args.images)
        rows.append(row)
        name = "/".join(path.parent.parts[-2:])
        print(
            f"| {name} | {row['miou_raw']:.2f} | {row['miou_pydensecrf']:.2f} | {row['miou_engine']:.2f} | "
            f"{100 * row['agreement']:.3f} | {row['ms_pydensecrf']:.1f} | {row['ms_engine']:.1f} | "
            f"{row['ms_pydensecrf'] / row['ms_engine']:.2f}x |",
            flush=True,
        )
    largest = max(abs(row["miou_pydensecrf"] - row["miou_engine"]) for row in rows)
    lowest = min(row["agreement"] for row in rows)
    speed_up = sum(row["ms_pydensecrf"] for row in rows) / sum(row["ms_engine"] for row in rows)
    print(
        f"\nagreement >= {100 * lowest:.3f} % (goal {100 * AGREEMENT_GOAL:.1f}: {_verdict(lowest >= AGREEMENT_GOAL)}); "
        f"mIoU moved <= {largest:.2f} (goal {MIOU_GOAL}: {_verdict(largest <= MIOU_GOAL)}); "
        f"engine {speed_up:.2f}x less CPU per image"
    )


if __name__ == "__main__":
    main()
