"""The one place holding the class lists, the ignore label and the colour palette.

A run's classes are the config's `data.classes` (VOC's 20 by default), recorded in the accepted dataset report
(`dataset.json`, key `classes`) that every step reads: `ClassList.of_dataset` is how a step learns them, so
nothing downstream of the dataset check assumes VOC's 20. The VOC constants below remain for what is VOC by
definition: the synthetic VOC generator, SBD's maps, the official CRF benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

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


MAX_FOREGROUND = IGNORE_LABEL - 1  # labels 1..254 in a uint8 map, 255 being the ignore label


def class_index(name: str) -> int:
    """Index of a VOC class name in the 21-label space (background = 0); KeyError for unknown names."""
    return VOC.index(name)


@dataclass(frozen=True)
class ClassList:
    """A dataset's foreground classes in label order: class k (1-based) is `foreground[k - 1]`, 0 is background."""

    foreground: tuple[str, ...]

    def __post_init__(self) -> None:
        names = list(self.foreground)
        if not names or len(names) > MAX_FOREGROUND:
            raise ValueError(f"a class list holds 1..{MAX_FOREGROUND} foreground classes, got {len(names)}")
        if len(set(names)) != len(names) or "background" in names or not all(n.strip() == n and n for n in names):
            raise ValueError(f"class names must be unique, non-empty, unpadded and not 'background': {names}")

    @classmethod
    def of_dataset(cls, dataset: dict) -> ClassList:
        """The classes an accepted dataset report (`dataset.json`) records."""
        return cls(tuple(dataset["classes"]))

    @property
    def names(self) -> tuple[str, ...]:
        """Every label's name, background first: index = label value."""
        return ("background", *self.foreground)

    @property
    def num_classes(self) -> int:
        """Labels of a class map, background included (VOC: 21)."""
        return len(self.foreground) + 1

    @property
    def num_foreground(self) -> int:
        """Image-level labels, the classifier's outputs (VOC: 20)."""
        return len(self.foreground)

    def index(self, name: str) -> int:
        """Label value of a foreground class name; KeyError for names outside the list."""
        try:
            return self.foreground.index(name) + 1
        except ValueError:
            raise KeyError(name) from None


VOC = ClassList(FOREGROUND_CLASSES)


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
