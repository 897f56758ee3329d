"""Reading images, masks and saliency maps, and writing VOC palettised masks, atomically."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.core.errors import DataError
from wsss.core.files import atomic_path
from wsss.data.classes import IGNORE_LABEL, PALETTE


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image as H x W x 3 uint8 RGB; grayscale, CMYK and palette JPEGs are converted."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise DataError(f"{path}: image not found. Check the dataset root and the split list.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: unreadable or truncated image ({exc}). Re-extract or re-download this file, "
            "or remove it from the list that names it (split list, OoD or extra image list)."
        ) from None


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image from its header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except FileNotFoundError:
        raise DataError(f"{path}: file not found. Check the dataset root and the split list.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: not a readable image ({exc}). Re-extract or re-download this file.") from None
    return height, width


def read_mask(path: str | os.PathLike, num_classes: int | None = None) -> np.ndarray:
    """Read a label mask (palettised 'P' or grayscale 'L' PNG) as H x W uint8 label indices.

    With `num_classes` (the dataset's, background included), values must be 0..num_classes-1 or 255 (ignore):
    anything else means the file is not a class-index mask of this dataset. Readers that only draw a mask leave
    it unset.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("P", "L"):
                raise DataError(
                    f"{path}: label mask has mode {image.mode!r}; expected a palettised ('P') or "
                    "grayscale ('L') PNG of class indices. Convert colour masks to indices first."
                )
            mask = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: label mask not found. Check the dataset root and the split list.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable label mask ({exc}). Re-extract or regenerate it.") from None
    if num_classes is not None:
        bad = labels_outside(mask, num_classes)
        if bad:
            raise DataError(
                f"{path}: label mask holds values {bad} outside 0..{num_classes - 1} and "
                f"{IGNORE_LABEL}. It is not a class-index mask of this dataset's {num_classes - 1} classes "
                "(data.classes)."
            )
    return mask


def labels_outside(labels: np.ndarray, num_classes: int) -> list[int]:
    """The values of a label map that are neither a class (0..num_classes-1, background included) nor the ignore
    label, sorted: what makes a map not one of this dataset's."""
    return np.setdiff1d(np.unique(labels), np.r_[np.arange(num_classes), IGNORE_LABEL]).tolist()


def write_mask(path: str | os.PathLike, mask: np.ndarray, *, atomic: bool = True) -> None:
    """Write H x W uint8 class indices as a VOC palettised PNG, atomically unless `atomic` is False: for a file
    inside a folder that is itself written atomically (`wsss.core.files.atomic_dir`), where a temporary and a
    rename per file add nothing but a scan of the growing folder for a dead writer's leftovers per file."""
    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"mask must be a 2-D uint8 array, got {mask.dtype} {mask.shape}")
    image = Image.fromarray(mask, mode="P")
    image.putpalette(PALETTE.reshape(-1).tolist())
    if not atomic:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        return
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def read_grey(path: str | os.PathLike) -> np.ndarray:
    """Read a grey map (e.g. saliency, 0..255) as H x W float32 in [0, 1]."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise DataError(f"{path}: map not found. Check the saliency root.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: unreadable grey map ({exc}). Regenerate it.") from None


def write_grey(path: str | os.PathLike, values: np.ndarray) -> None:
    """Write an H x W map in [0, 1] (or uint8) as a grey PNG, atomically."""
    values = np.asarray(values)
    if values.dtype != np.uint8:
        values = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(values, mode="L").save(tmp, format="PNG")


def write_jpeg(path: str | os.PathLike, rgb: np.ndarray, quality: int = 95) -> None:
    """Write H x W x 3 uint8 RGB as a JPEG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(np.asarray(rgb, dtype=np.uint8), mode="RGB").save(tmp, format="JPEG", quality=quality)
