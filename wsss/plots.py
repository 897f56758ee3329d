"""Plots for the Snakemake report: ICD training curves and per-class IoU of the seeds.

They read only the small JSON/CSV artifacts (no torch), so the report environment stays light.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from wsss.core.files import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(figure, out_path) -> None:
    figure.tight_layout()
    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, dpi=100)
    _pyplot().close(figure)


def sign_flips(history: Sequence[Mapping]) -> list[int]:
    """Classes whose sign changed during each epoch; every sign starts at +1 (icd.model.SignFlip)."""
    previous: Mapping[str, int] = dict.fromkeys(history[0]["sign"], 1) if history else {}
    flips = []
    for record in history:
        flips.append(sum(record["sign"][name] != previous[name] for name in record["sign"]))
        previous = record["sign"]
    return flips


def training_curves(out_path, history: Sequence[Mapping]) -> None:
    """Per epoch of ICD training (networks/<name>/history.json): each loss, the learning rate, and the sign flips."""
    if not history:
        raise ValueError("empty training history: nothing to plot")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    epochs = [record["epoch"] for record in history]
    figure, (losses, lr, flips) = plt.subplots(1, 3, figsize=(14, 3.8))
    for key in sorted(key for key in history[0] if key.startswith("loss_")):
        losses.plot(
            epochs, [record[key] for record in history], marker="o", markersize=3, label=key.removeprefix("loss_")
        )
    losses.set(title="losses (mean per batch)", xlabel="epoch")
    losses.legend(fontsize=8)
    lr.plot(epochs, [record["lr"] for record in history], marker="o", markersize=3, label="lr")
    lr.set(title="learning rate", xlabel="epoch")
    flips.bar(epochs, sign_flips(history), color="tab:red")
    flips.set(title="sign flips (classes whose sign changed)", xlabel="epoch")
    for axis in (losses, lr, flips):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    flips.yaxis.set_major_locator(MaxNLocator(integer=True))
    _save(figure, out_path)


def per_class_iou_chart(out_path, per_class: Mapping[str, Mapping[str, float]]) -> None:
    """Grouped bars: IoU of every class (background first) for each seed variant ({variant: {class: IoU}})."""
    if not per_class:
        raise ValueError("no seed variants: nothing to plot")
    plt = _pyplot()
    variants = list(per_class)
    classes = list(per_class[variants[0]])
    positions = np.arange(len(classes))
    width = 0.8 / len(variants)
    figure, axis = plt.subplots(figsize=(max(8.0, 0.6 * len(classes) * len(variants) ** 0.5), 4))
    for index, variant in enumerate(variants):
        axis.bar(
            positions + (index - (len(variants) - 1) / 2) * width,
            [per_class[variant][name] for name in classes],
            width,
            label=variant,
        )
    axis.set_xticks(positions, classes, rotation=45, ha="right")
    axis.set(ylabel="IoU", ylim=(0, 1), title="seed IoU per class on the training split")
    # Beside the axes: with the CAM baselines and both Table 3 readings there are up to 10 variants,
    # whose legend inside would hide the background bars.
    axis.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(figure, out_path)
