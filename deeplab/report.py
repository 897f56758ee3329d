"""Tables 7/8 (segmentation mIoU beside the paper's) and a Fig. 6-style figure of DeepLab predictions."""

from __future__ import annotations

import math

import numpy as np

from deeplab.workflow import GROUND_TRUTH, parse_run_name
from wsss.core.files import atomic_path, write_csv, write_text
from wsss.data.classes import PALETTE
from wsss.data.io import read_mask, read_rgb
from wsss.data.voc import VOCPaths

# `dataset` (data.source: voc, coco, synthetic) beside `split`, as a split's name says which images only within one
# dataset: tables of several runs stay readable side by side. `round`: 1 for DeepLab trained on the seeds, r >= 2
# for the one trained on round r-1's predictions of the training split (deeplab.rounds).
TABLE_COLUMNS = ("backbone", "seeds", "round", "supervision", "dataset", "split", "multiscale", "crf", "miou")
# The paper's DeepLab-LargeFOV mIoU (%), (val, test): Table 7 (VGG16) and Table 8 (ResNet101).
PAPER = {
    "vgg16": {"I": (61.2, 60.9), "I+S": (64.0, 63.9)},
    "resnet101": {"I": (64.1, 64.3), "I+S": (67.8, 68.0)},
}
PAPER_TABLE = {"vgg16": 7, "resnet101": 8}
# The seed sets the paper's I and I+S rows were trained on, in one round: ICD + CRF, and ICD with saliency.
PAPER_SEEDS = frozenset({"icd_crf", "icd_sal"})
# The datasets whose rows sit beside the paper's VOC numbers: VOC, and the synthetic VOC standing in for it.
PAPER_DATASETS = frozenset({"voc", "synthetic"})


def supervision(seeds: str) -> str:
    """`I` (image labels), `I+S` (plus saliency: the `*_sal` seeds), or `full` for ground-truth masks."""
    if seeds == GROUND_TRUTH:
        return "full"
    return "I+S" if seeds.endswith("_sal") else "I"


def run_columns(record: dict) -> dict:
    """Backbone, seed set and round of a record `deeplab evaluate-deeplab` writes: its `seeds` is the run's name,
    which for a further round names the seed set and the round (`icd_crf_round2`)."""
    seeds, round_number = parse_run_name(record["seeds"])
    return {"backbone": record["backbone"], "seeds": seeds, "round": round_number}


def segmentation_rows(evaluations: list[dict]) -> list[dict]:
    """One row per (backbone, seeds, round, post-processing) from the records `deeplab evaluate-deeplab` writes."""
    rows = []
    for record in evaluations:
        run = run_columns(record)
        for post, result in record["results"].items():
            rows.append(
                {
                    **run,
                    "supervision": supervision(run["seeds"]),
                    "dataset": record["dataset"],
                    "split": record["split"],
                    "multiscale": record["multiscale"],
                    "crf": post == "crf",
                    "miou": result["miou"],
                }
            )
    return rows


def paper_tables_markdown(rows: list[dict]) -> str:
    """Tables 7/8 as markdown: our val mIoU per seed set and round beside the paper's val/test numbers (%), which
    sit beside round 1 only: the paper trained DeepLab once, on the seeds."""
    lines = []
    for backbone in [b for b in PAPER if any(r["backbone"] == b for r in rows)]:
        ours = [r for r in rows if r["backbone"] == backbone]
        lines += [
            f"### Table {PAPER_TABLE[backbone]}: DeepLab-LargeFOV, {backbone}",
            "",
            "| seeds | round | supervision | multi-scale | CRF | ours val | paper val | paper test |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in ours:
            compared = row["seeds"] in PAPER_SEEDS and row["round"] == 1 and row["dataset"] in PAPER_DATASETS
            paper = PAPER[backbone].get(row["supervision"]) if compared else None
            val, test = paper if paper else ("-", "-")
            lines.append(
                f"| {row['seeds']} | {row['round']} | {row['supervision']} | {'yes' if row['multiscale'] else 'no'} | "
                f"{'yes' if row['crf'] else 'no'} | {100 * row['miou']:.1f} | {val} | {test} |"
            )
        lines.append("")
    lines.append(
        "Ours: mIoU (%) on the evaluation split of this run's dataset; the test split is scored by the "
        "VOC server from the packed predictions. Round r >= 2: DeepLab trained on round r-1's predictions of the "
        "training split (deeplab.rounds). Paper numbers are for real PASCAL VOC 2012, one round."
    )
    return "\n".join(lines) + "\n"


def write_segmentation_tables(evaluations: list[dict], csv_path, markdown_path, per_class_path) -> list[dict]:
    rows = segmentation_rows(evaluations)
    write_csv(csv_path, rows, columns=TABLE_COLUMNS)
    per_class = [
        {**run_columns(record), "crf": post == "crf", **result["per_class"]}
        for record in evaluations
        for post, result in record["results"].items()
    ]
    write_csv(per_class_path, per_class)
    write_text(markdown_path, paper_tables_markdown(rows))
    return rows


def prediction_figure(out_path, dataset: dict, predictions: dict[str, str], *, count: int = 6) -> None:
    """Fig. 6 style: for the first `count` eval images, the image, each model's prediction, the ground truth.

    `predictions` maps a column title to a folder of `<id>.png` predictions.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["eval"]
    ids = dataset["splits"][split][:count]
    titles = ["image", *predictions, "ground truth"]
    columns = min(len(titles), 6)
    blocks = math.ceil(len(titles) / columns)
    figure, axes = plt.subplots(len(ids) * blocks, columns, figsize=(2 * columns, 2 * len(ids) * blocks), squeeze=False)
    for row, image_id in enumerate(ids):
        panels = [read_rgb(paths.image(image_id))]
        panels += [PALETTE[read_mask(f"{folder}/{image_id}.png")] for folder in predictions.values()]
        panels.append(PALETTE[read_mask(paths.ground_truth(split, image_id))])
        for index, axis in enumerate(axes[row * blocks : (row + 1) * blocks].ravel()):
            axis.set_xticks([])
            axis.set_yticks([])
            if index >= len(panels):
                axis.axis("off")
                continue
            axis.imshow(np.asarray(panels[index]))
            axis.set_title(titles[index], fontsize=7)
        axes[row * blocks][0].set_ylabel(image_id, fontsize=7)
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)
