"""DeepLab training samples: images with seed (or ground-truth) label maps, 255 = ignore.

Augmentation as DeepLab v2: a random scale drawn uniformly from `scale_range`, a horizontal flip,
padding to the crop size (the image with the colour the weights' normalisation maps to zero input,
`wsss.nets.normalisation`; labels with 255)
and a random crop. The sample drawn at position k of the training stream depends only on
(seed, k), so a resumed run sees exactly the samples an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from wsss.core.errors import DataError
from wsss.data.classes import IGNORE_LABEL, ClassList
from wsss.data.io import image_size, read_mask, read_rgb
from wsss.data.transforms import bilinear_resize, nearest_resize, pad_to, scaled_size
from wsss.data.voc import MAX_LISTED_PROBLEMS, VOCPaths


def augment(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray | None,
    *,
    crop_size: int,
    scale_range: tuple[float, float],
    flip: bool,
    pad_rgb: np.ndarray,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One training sample: (crop x crop x 3 uint8 image, crop x crop uint8 labels, or None without labels)."""
    scale = float(rng.uniform(*scale_range))
    height, width = scaled_size(image.shape, scale)
    image = bilinear_resize(image, height, width)
    flipped = flip and rng.random() < 0.5
    if flipped:
        image = image[:, ::-1]
    padded = np.empty((max(height, crop_size), max(width, crop_size), 3), np.uint8)
    padded[:] = pad_rgb
    padded[:height, :width] = image
    top = int(rng.integers(0, padded.shape[0] - crop_size + 1))
    left = int(rng.integers(0, padded.shape[1] - crop_size + 1))
    window = (slice(top, top + crop_size), slice(left, left + crop_size))
    if labels is not None:
        labels = nearest_resize(labels, height, width)
        labels = pad_to(labels[:, ::-1] if flipped else labels, crop_size, crop_size, IGNORE_LABEL)
        labels = np.array(labels[window])
    return np.array(padded[window]), labels


class SeedTrainingSet(Dataset):
    """Item k of an endless stream: epoch k // n, visited in a permutation seeded by (seed, epoch).

    `labels_root` holds `<id>.png` label maps (a seed folder); None reads the dataset's ground-truth
    masks of the training split instead (the fully supervised upper bound).
    """

    def __init__(
        self, dataset: dict, labels_root, *, seed: int, crop_size: int, scale_range, flip: bool, pad_rgb
    ) -> None:
        self.split = dataset["roles"]["train"]
        self.ids = list(dataset["splits"][self.split])
        self.paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
        self.classes = ClassList.of_dataset(dataset)
        self.labels_root = labels_root
        self.seed = seed
        self.options = dict(
            crop_size=crop_size, scale_range=tuple(scale_range), flip=flip, pad_rgb=np.asarray(pad_rgb, np.uint8)
        )
        self._orders: dict[int, list[int]] = {}

    def label_path(self, image_id: str):
        if self.labels_root is None:
            return self.paths.ground_truth(self.split, image_id)
        return f"{self.labels_root}/{image_id}.png"

    def check_seed_sizes(self, progress: bool = True) -> None:
        """Raise a DataError unless every seed exists and has its image's size, read from the PNG headers.

        Run before training so a bad seed folder stops it before any checkpoint, in the main process
        (from a DataLoader worker the message would come wrapped in the worker's traceback). The
        ground-truth masks need no check here: validate-data checked them.
        """
        if self.labels_root is None:
            return
        problems = []
        for image_id in tqdm(self.ids, desc="seed sizes", disable=not progress, mininterval=2.0):
            seed = self.label_path(image_id)
            try:
                expected, found = image_size(self.paths.image(image_id)), image_size(seed)
            except DataError as exc:
                problems.append(str(exc))
                continue
            if found != expected:
                problems.append(
                    f"{seed}: label map is {found[1]}x{found[0]} but its image is {expected[1]}x{expected[0]}"
                )
        if problems:
            more = len(problems) - MAX_LISTED_PROBLEMS
            listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS] + ([f"... and {more} more"] if more > 0 else []))
            raise DataError(
                f"{len(problems)} seed(s) of {self.labels_root} do not fit the training images:\n  "
                f"{listed}\nThe seed folder belongs to another dataset or run: regenerate the seeds."
            )

    def image_at(self, draw: int) -> str:
        """The id the stream visits at position `draw`."""
        epoch, position = divmod(draw, len(self.ids))
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders = {epoch: torch.randperm(len(self.ids), generator=generator).tolist()}
        return self.ids[self._orders[epoch][position]]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, draw: int):
        image_id = self.image_at(draw)
        image = read_rgb(self.paths.image(image_id))
        labels = read_mask(self.label_path(image_id), self.classes.num_classes)
        rng = np.random.default_rng([self.seed, draw])
        image, labels = augment(rng, image, labels, **self.options)
        return torch.from_numpy(image), torch.from_numpy(labels.astype(np.int64))
