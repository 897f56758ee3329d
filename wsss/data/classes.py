"""The one place holding the VOC class names, the ignore label and the colour palette."""

from __future__ import annotations

import numpy as np

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
FOREGROUND_CLASSES: tuple[str, ...] = VOC_CLASSES[1:]
NUM_CLASSES = len(VOC_CLASSES)  # 21, background included
NUM_FOREGROUND = len(FOREGROUND_CLASSES)  # 20
IGNORE_LABEL = 255


def class_index(name: str) -> int:
    """Index of a class name in the 21-label space (background = 0); KeyError for unknown names."""
    try:
        return VOC_CLASSES.index(name)
    except ValueError:
        raise KeyError(name) from None


def _voc_palette() -> np.ndarray:
    """The VOC colour map: label bits spread over the high bits of R, G and B (256 x 3, uint8)."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        value = label
        for shift in range(7, -1, -1):
            r |= ((value >> 0) & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[label] = (r, g, b)
    return palette


PALETTE: np.ndarray = _voc_palette()
PALETTE.flags.writeable = False
