"""The square canvas an image is padded to for whole-image inference (superpixel features, score maps).

The official code pads every VOC image to 513 x 513, VOC's largest side (500) rounded up to 32k + 1: a
canvas of 8k + 1 pixels puts the stride-8 feature grid on its first and last pixel, so score maps resize
back to the canvas with aligned corners, and 32k + 1 keeps that at the coarser strides too. The canvas is a
property of the data, not of the method: unless the config sets one (`superpixels.feature_input_size`,
`seeds.inference_size`), it is derived from the largest image the dataset check found (`largest_side` in
dataset.json), the same 32k + 1 rule that gives 513 for VOC and 129 for the synthetic set's 128 px.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

CANVAS_STEP = 32


def derived_canvas(largest_side: int) -> int:
    """The smallest 32k + 1 that holds an image side of `largest_side` pixels."""
    return CANVAS_STEP * math.ceil((largest_side - 1) / CANVAS_STEP) + 1


def canvas_size(setting: int | None, dataset: dict) -> int:
    """The canvas a step uses: the config's `setting`, or null's derived one from the dataset report."""
    return setting if setting is not None else derived_canvas(dataset["largest_side"])


def canvas_problems(images: Sequence[Path], sides: Sequence[int], canvases: Mapping[str, int]) -> list[str]:
    """The dataset check's problem for each canvas the config sets ({setting key: pixels}) that the largest of
    `images` (whose longer sides are `sides`) does not fit in, naming that image and the fix."""
    largest_side = max(sides, default=0)
    problems = []
    for key, size in canvases.items():
        if largest_side > size:
            largest = images[sides.index(largest_side)]
            problems.append(
                f"{largest}: image side of {largest_side} px is larger than {key} {size}, the canvas images are "
                f"padded to. Raise {key} to at least {largest_side}, or leave it null to derive it from the data."
            )
    return problems
