"""Inference of the score maps seeds are made from: CAM, bottom-up S, refined S' and adapted S''.

As the official `run_infer`: single scale, the image padded at the bottom/right to a fixed canvas
(513 on VOC), no flip, BatchNorm in eval mode, the stored sign-flip EMA orienting S. Only the
image's present classes are kept, at feature resolution and in float16, so VoC-scale scores stay
a few GB; consumers resize them to the canvas (bilinear, half-pixel centres as cv2.resize) and crop.

`inference_scale` enlarges the padded canvas before the network sees it (1 on VOC, as the official
code). The maps still cover the canvas, so consumers need only the canvas size, whatever the scale.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from torch.nn import functional as F
from tqdm import tqdm

from icd.model import ICDNet, refine_with_superpixels
from icd.seed_sets import NO_TOP_DOWN
from icd.train import build_network
from wsss.core.errors import ConfigError
from wsss.core.shards import ShardStore, save_shard
from wsss.data.classes import FOREGROUND_CLASSES, IGNORE_LABEL, NUM_FOREGROUND
from wsss.data.io import read_mask, read_rgb
from wsss.data.transforms import bilinear_resize, nearest_resize, pad_to
from wsss.data.voc import VOCPaths
from wsss.metrics import PixelAveragePrecision
from wsss.nets.backbones import default_device
from wsss.nets.normalisation import Normalisation, trained_normalisation
from wsss.training import multi_hot

SCORE_MAPS = ("cam", "bottom_up", "refined", "adapted")
# Table 3's steps before the adaptation: also taken, as extra `<map>_no_td` rows, from a network trained
# without top-down adaptation when one exists (icd.seed_sets.NO_TOP_DOWN).
ABLATION_MAPS = ("bottom_up", "refined")


def load_trained(model_path, *, model: dict, icd: dict, normalisation: str) -> tuple[ICDNet, Normalisation]:
    """The trained network in eval mode and the input normalisation it records; refuses weights trained with
    other options or on other input than `normalisation`."""
    state = torch.load(model_path, map_location="cpu", weights_only=True)
    trained = json.loads(state["options"])
    normalise = trained_normalisation(state, model_path)
    if trained["model"] != model or trained["icd"] != icd or normalise.name != normalisation:
        raise ConfigError(
            f"{model_path}: trained with other model/icd settings or input normalisation than the "
            "current configuration. Rerun train_icd (snakemake does this when the config changes) or "
            "restore the settings."
        )
    net = build_network(model, icd)
    net.load_state_dict(state["model"])
    return net.eval(), normalise


def export_backbone(model_path, out_path, *, model: dict, icd: dict, normalisation: str) -> None:
    """Save the trained ICD network's backbone (conv1-fc7) in the stand-in/ImageNet file format, recording
    the input normalisation it was trained on.

    The synthetic preset starts DeepLab VGG16 from it (`deeplab.init_from_icd`): the pretext
    stand-in, unlike ImageNet for VOC, has never seen the classes, and these weights learned them
    from the same image-level labels, so no extra supervision enters.
    """
    from wsss.nets.backbones import save_backbone

    net, normalise = load_trained(model_path, model=model, icd=icd, normalisation=normalisation)
    save_backbone(net.backbone, out_path, normalise.name)


@torch.no_grad()
def image_scores(
    net: ICDNet,
    image: np.ndarray,
    superpixels: np.ndarray,
    classes: list[int],
    *,
    canvas: int,
    inference_scale: float = 1.0,
    normalise: Normalisation,
) -> np.ndarray:
    """float16 array (len(SCORE_MAPS), k, h, w): the four maps for the image's k present classes.

    The image is padded with the colour `normalise` (the input the trained network records) maps to
    zero. The refined map is always computed (with the image's superpixels, padding as its own region) so
    the Table 3 ablation has it even for models trained without refinement; a model without the
    top-down branch gets NaN for `adapted`.
    """
    if max(image.shape[:2]) > canvas:
        raise ConfigError(
            f"image of {image.shape[1]}x{image.shape[0]} exceeds seeds.inference_size {canvas}; raise it."
        )
    device = next(net.parameters()).device
    image = pad_to(image, canvas, canvas, np.asarray(normalise.pad_rgb, np.uint8))
    regions = pad_to(superpixels.astype(np.int64), canvas, canvas, int(superpixels.max()) + 1)
    if inference_scale != 1.0:  # keeps the 8k+1 shape of the canvas, so the maps align as at scale 1
        size = round((canvas - 1) * inference_scale) + 1
        image, regions = bilinear_resize(image, size, size), nearest_resize(regions, size, size)
    padded = normalise(image[None])
    regions = torch.from_numpy(regions)[None]
    labels = torch.from_numpy(multi_hot(classes))[None]
    padded, regions, labels = padded.to(device), regions.to(device), labels.to(device)
    outputs = net(padded, labels, regions)
    refined = refine_with_superpixels(outputs["bottom_up"], regions, labels)
    adapted = outputs["adapted"] if outputs["adapted"] is not None else torch.full_like(refined, float("nan"))
    stacked = torch.stack([outputs["cam"], outputs["bottom_up"], refined, adapted])[:, 0]
    return stacked[:, np.asarray(classes) - 1].float().cpu().numpy().astype(np.float16)


def infer_scores_shard(
    out_path,
    ids: list[str],
    *,
    dataset: dict,
    model_path,
    superpixel_shards: list[str],
    model: dict,
    icd: dict,
    normalisation: str,
    inference_size: int,
    inference_scale: float = 1.0,
    progress: bool = True,
) -> None:
    """Score maps of `ids` (training split), saved as one npz shard {id: image_scores(...)}, on the input the
    trained network records (which must be `normalisation`)."""
    net, normalise = load_trained(model_path, model=model, icd=icd, normalisation=normalisation)
    net.to(default_device())
    paths = VOCPaths.create(dataset["voc_root"])
    superpixels = ShardStore(superpixel_shards)
    scores = {}
    for image_id in tqdm(ids, desc="scores", disable=not progress, mininterval=2.0):
        scores[image_id] = image_scores(
            net,
            read_rgb(paths.image(image_id)),
            superpixels[image_id],
            dataset["labels"][image_id],
            canvas=inference_size,
            inference_scale=inference_scale,
            normalise=normalise,
        )
    save_shard(out_path, scores)


def upsample(maps: np.ndarray, canvas: int, height: int, width: int) -> np.ndarray:
    """(..., h, w) feature-resolution maps -> (..., height, width) float32: resize to the canvas, crop."""
    tensor = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    lead = tensor.shape[:-2]
    resized = F.interpolate(
        tensor.reshape(1, -1, *tensor.shape[-2:]), size=(canvas, canvas), mode="bilinear", align_corners=False
    )
    return resized[0, :, :height, :width].reshape(*lead, height, width).numpy()


def scored_training_images(
    dataset: dict, score_shards: list[str], *, canvas: int, description: str, progress: bool = True
):
    """Yield (id, ground truth, image-resolution score maps, present classes) over the training split.

    The one loop that every score-based evaluation (Table 1, the Table 2 sweep) walks.
    """
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    split = dataset["roles"]["train"]
    store = ShardStore(score_shards)
    for image_id in tqdm(dataset["splits"][split], desc=description, disable=not progress, mininterval=2.0):
        gt = read_mask(paths.ground_truth(split, image_id))
        yield image_id, gt, upsample(store[image_id], canvas, *gt.shape), dataset["labels"][image_id]


def score_map_average_precision(
    dataset: dict,
    score_shards: list[str],
    *,
    canvas: int,
    ablation_shards: list[str] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, float]]:
    """Table 1: pixel-level AP per class and its mean over classes, for each score map.

    Each class ranks every valid pixel of the images holding it by that class's score. Every
    SCORE_MAPS row comes from `score_shards` (the full network, as the official inference writes all
    four maps of one network); `ablation_shards` (a network trained without top-down adaptation) add
    its ABLATION_MAPS as `<map>_no_td` rows, matching Table 3's `icd_<map>_no_td` seeds.
    """
    meters = {name: PixelAveragePrecision(NUM_FOREGROUND) for name in SCORE_MAPS}
    ablation = ShardStore(ablation_shards) if ablation_shards else None
    if ablation is not None:
        meters.update({name + NO_TOP_DOWN: PixelAveragePrecision(NUM_FOREGROUND) for name in ABLATION_MAPS})
    images = scored_training_images(dataset, score_shards, canvas=canvas, description="pixel AP", progress=progress)
    for image_id, gt, stacked, classes in images:
        maps = dict(zip(SCORE_MAPS, stacked, strict=True))
        if ablation is not None:
            other = dict(zip(SCORE_MAPS, upsample(ablation[image_id], canvas, *gt.shape), strict=True))
            maps.update({name + NO_TOP_DOWN: other[name] for name in ABLATION_MAPS})
        valid = gt != IGNORE_LABEL
        for position, class_index in enumerate(classes):
            for name, scores in maps.items():
                meters[name].add(class_index - 1, scores[position].astype(np.float16), gt == class_index, valid)
    table = {}
    for name, meter in meters.items():
        per_class = meter.per_class()
        table[name] = {
            "mAP": float(np.nanmean(per_class)),
            **{cls: float(ap) for cls, ap in zip(FOREGROUND_CLASSES, per_class, strict=True) if not np.isnan(ap)},
        }
    return table
