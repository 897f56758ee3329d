"""SBD as downloaded: recognise its original release and convert it, once, into the layout the pipeline reads.

SBD (Hariharan et al., "Semantic contours from inverse detectors", ICCV 2011) ships as
  benchmark_RELEASE/dataset/img/<id>.jpg, cls/<id>.mat, train.txt, val.txt
each map being the `Segmentation` field (H x W, labels 0..20) of the `GTcls` struct. The pipeline reads the layout
DeepLab made standard instead (see `wsss.data.voc`):
  <sbd_root>/SegmentationClassAug/<id>.png, <sbd_root>/ImageSets/SegmentationAug/train_aug.txt
`release_folder` tells the two apart with a few stat calls, whatever the dataset's size, as the Snakefile asks each
time it is parsed; `convert_sbd` (rule convert_sbd, `icd convert-sbd`) writes the second from the first.

train_aug is the standard augmented training set: (SBD train + SBD val + VOC train) minus VOC val, sorted (10,582
ids on the real data). Every VOC train id takes VOC's own SegmentationClass/<id>.png, every other id its SBD map; so
an id in both VOC train and SBD takes VOC's mask. That is the usual recipe for SegmentationClassAug (DeepLab users'
train-DeepLab: convert SBD's maps, then copy VOC's masks over them), and VOC's mask is the official annotation, with
the 255 band around objects that VOC's evaluation ignores; SBD's maps, drawn by other annotators, have no such band.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsss.core.errors import DataError
from wsss.core.files import atomic_dir
from wsss.data.classes import IGNORE_LABEL, NUM_CLASSES
from wsss.data.io import image_size, labels_outside, read_mask, write_mask
from wsss.data.voc import VOCPaths, parallel_map, problems_error, read_split

AUG_SPLIT = "train_aug"
RELEASE_LISTS = ("train.txt", "val.txt")


def release_folder(root: str | os.PathLike) -> Path | None:
    """SBD's release folder (benchmark_RELEASE/dataset) when `root` is it or benchmark_RELEASE/ above it, else None:
    a ready SegmentationClassAug tree (read as ready even beside a cls/ folder), or a folder the dataset check will
    reject. Three stat calls at most."""
    root = Path(root)
    if (root / "SegmentationClassAug").is_dir():
        return None
    return next((folder for folder in (root, root / "dataset") if (folder / "cls").is_dir()), None)


def convert_sbd(
    sbd_root: str | os.PathLike,
    voc_root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Write SBD's release at `sbd_root` (with VOC's lists and train masks at `voc_root`) as the ready layout at `out`.

    Every problem is checked and reported in one DataError, after the whole pass: a user fixes them all before the
    next run. `out` appears whole or not at all, so a failed conversion leaves the previous one as it was. Returns
    the counts of train_aug ids and where their masks came from.
    """
    release = release_folder(sbd_root)
    if release is None:
        raise DataError(
            f"{sbd_root}: not SBD's original release (no cls/ folder in it or in its dataset/ folder). Point "
            "data.sbd_root at SBD's benchmark_RELEASE/dataset folder, or at a folder holding SegmentationClassAug/."
        )
    listed, missing = _listed_ids(release)
    problems = [
        f"{path}: missing, though '{path.stem}' is listed in SBD's train.txt or val.txt. Re-extract SBD, or remove "
        "the id from the list."
        for path in missing
    ]
    incomplete = {path.stem for path in missing}
    voc = VOCPaths.create(voc_root)
    voc_train = set(read_split(voc, "train"))
    ids = sorted((listed | voc_train) - set(read_split(voc, "val")))
    with atomic_dir(out) as folder:
        converted = VOCPaths.create(voc_root, folder)
        jobs = []
        for image_id in ids:
            mask = converted.ground_truth(AUG_SPLIT, image_id)
            if image_id in voc_train:
                jobs.append((voc.ground_truth("train", image_id), None, mask))
            elif image_id not in incomplete:
                jobs.append((_sbd_map(release, image_id), _image(release, image_id), mask))
        problems += [p for p in parallel_map(_write_mask_of, jobs, workers, progress, "convert SBD maps") if p]
        if problems:
            raise problems_error(f"SBD's release at {release}", problems)
        converted.list_file(AUG_SPLIT).parent.mkdir(parents=True)
        converted.list_file(AUG_SPLIT).write_text("".join(f"{i}\n" for i in ids))
    from_voc = len(voc_train.intersection(ids))
    return {AUG_SPLIT: len(ids), "masks_from_voc": from_voc, "masks_from_sbd": len(ids) - from_voc}


def _image(release: Path, image_id: str) -> Path:
    return release / "img" / f"{image_id}.jpg"


def _sbd_map(release: Path, image_id: str) -> Path:
    return release / "cls" / f"{image_id}.mat"


def _listed_ids(release: Path) -> tuple[set[str], list[Path]]:
    """The ids SBD's train.txt and val.txt list, and their files missing from img/ or cls/."""
    missing_lists = [release / name for name in RELEASE_LISTS if not (release / name).is_file()]
    if missing_lists:
        raise DataError(
            f"{', '.join(map(str, missing_lists))}: SBD's split list(s) not found. Re-extract SBD's "
            "benchmark_RELEASE/dataset folder, which holds train.txt and val.txt beside img/ and cls/."
        )
    listed = {line.strip() for name in RELEASE_LISTS for line in (release / name).read_text().splitlines()} - {""}
    files = (path for image_id in sorted(listed) for path in (_image(release, image_id), _sbd_map(release, image_id)))
    return listed, [path for path in files if not path.is_file()]


def _write_mask_of(job: tuple[Path, Path | None, Path]) -> str | None:
    """Write one id's mask, from an SBD map (`.mat`, with its image) or a VOC mask (`.png`); a problem, or None.

    Inside the conversion's atomic folder, so each file is written in place (`atomic=False`).
    """
    source, image, out = job
    try:
        labels = _read_sbd_map(source, image) if image else read_mask(source)
        bad = labels_outside(labels, NUM_CLASSES)
        if bad:
            raise DataError(
                f"{source}: labels {bad} outside 0..{NUM_CLASSES - 1} and {IGNORE_LABEL}: not a class map "
                "of VOC's 20 classes. Re-extract or re-download this file."
            )
    except DataError as exc:
        return str(exc)
    write_mask(out, labels.astype(np.uint8), atomic=False)
    return None


def _read_sbd_map(path: Path, image: Path) -> np.ndarray:
    """The class map of an SBD `.mat` file (GTcls.Segmentation), checked to have its image's size."""
    from scipy.io import loadmat  # imported here: the Snakefile imports this module to recognise the layout
    from scipy.io.matlab import MatReadError

    try:
        gtcls = loadmat(path, struct_as_record=False, squeeze_me=True).get("GTcls")
    except (OSError, ValueError, MatReadError) as exc:
        raise DataError(f"{path}: unreadable .mat file ({exc}). Re-extract or re-download SBD.") from None
    if gtcls is None:
        raise DataError(
            f"{path}: no GTcls struct, so not one of SBD's class maps (cls/; inst/ holds instance maps, GTinst). "
            "Re-extract or re-download SBD."
        )
    segmentation = getattr(gtcls, "Segmentation", None)
    if not isinstance(segmentation, np.ndarray) or segmentation.ndim != 2 or segmentation.dtype.kind not in "biu":
        raise DataError(
            f"{path}: GTcls has no Segmentation field holding an H x W integer class map. Re-extract or re-download "
            "SBD."
        )
    expected = image_size(image)
    if segmentation.shape != expected:
        raise DataError(
            f"{path}: map is {segmentation.shape[1]}x{segmentation.shape[0]} (WxH) but its image {image} is "
            f"{expected[1]}x{expected[0]}. Re-extract or re-download both files."
        )
    return segmentation
