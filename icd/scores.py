"""Inference of the score maps seeds are made from: CAM, bottom-up S, refined S' and adapted S''.

As the official `run_infer`: single scale, the image padded at the bottom/right to a fixed canvas
(513 on VOC), no flip, BatchNorm in eval mode, the stored sign-flip EMA orienting S. Only the
image's present classes are kept, at feature resolution and in float16, so VoC-scale scores stay
a few GB; consumers resize them to the canvas (bilinear, half-pixel centres as cv2.resize) and crop
(`icd.score_maps`).

`inference_scale` enlarges the padded canvas before the network sees it (1 on VOC, as the official
code). The maps still cover the canvas, so consumers need only the canvas size, whatever the scale.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from tqdm import tqdm

from icd.model import ICDNet, refine_with_superpixels
from icd.train import build_network
from wsss.core.errors import ConfigError
from wsss.core.shards import ShardStore, save_shard
from wsss.data.io import read_rgb
from wsss.data.transforms import bilinear_resize, nearest_resize, pad_to
from wsss.data.voc import VOCPaths
from wsss.nets.backbones import default_device
from wsss.nets.normalisation import Normalisation, trained_normalisation
from wsss.training import multi_hot


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
    net = build_network(model, icd, num_classes=state["model"]["fc8.weight"].shape[0])  # the labels it learned
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
    """float16 array (len(icd.score_maps.SCORE_MAPS), k, h, w): the four maps for the image's k present classes.

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
    labels = torch.from_numpy(multi_hot(classes, net.fc8.out_channels))[None]
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
