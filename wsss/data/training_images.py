"""The images an ICD network learns from: the dataset's training split, then the extra image-level-labelled images.

Extra images (`data.extra`, wsss.data.extra: web-style images, mostly one class each) train the ICD networks only:
seeds, their tables and DeepLab stay on the training split, and evaluation never sees them. A network leaves them
out with `icd.extra_images: false`. Superpixels are computed for all of them (ICD's refinement reads them in
training), sharded over this same order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wsss.data.extra import ExtraImages
from wsss.data.voc import VOCPaths


@dataclass(frozen=True)
class TrainingImages:
    """Ids in training order (the split's, then the extra images'), their image-level labels, their files."""

    ids: tuple[str, ...]
    labels: Mapping[str, list[int]]
    voc: VOCPaths
    extra: ExtraImages | None

    @classmethod
    def of_dataset(cls, dataset: dict, *, extra: bool = True) -> TrainingImages:
        """The report's training split, followed by its extra images when `extra` and the dataset has some."""
        ids = list(dataset["splits"][dataset["roles"]["train"]])
        labels = {image_id: dataset["labels"][image_id] for image_id in ids}
        extra_images = ExtraImages.of_dataset(dataset) if extra else None
        if extra_images:
            ids += extra_images.ids
            labels.update(extra_images.labels)
        return cls(tuple(ids), labels, VOCPaths.create(dataset["voc_root"]), extra_images or None)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def extra_ids(self) -> tuple[str, ...]:
        return self.extra.ids if self.extra else ()

    def path(self, image_id: str) -> Path:
        """The image file of a training-split id or of an extra image's id."""
        if self.extra and image_id in self.extra.labels:
            return self.extra.path(image_id)
        return self.voc.image(image_id)
