"""DeepLab inference at full resolution: single or multi-scale (+ flip) averaging, optional dense CRF.

Class probabilities are the softmax of the logits upsampled (bilinear) to the image, averaged over
scales and flips; with scales [1] and no flip that is exactly the single-scale prediction. The CRF is
deeplab-pytorch's test-time model (unary -log p, a Gaussian and a bilateral Potts term) run on the seed CRF's
engine (wsss.crf.refine.crf_marginals): its labels agree with deeplab-pytorch's pydensecrf call on >= 99.9 % of
pixels, at about half its CPU.

Outputs, by layout: evaluation splits get `raw/<id>.png` (argmax) and, with the CRF, `crf/<id>.png`; the test
split gets the final prediction (after the CRF when it runs) in the VOC evaluation server's layout,
`SERVER_FOLDER/<id>.png`, which `pack_for_server` tars for upload; the training split gets the final prediction as
`<id>.png`, a seed folder, the labels of a further DeepLab round.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from deeplab.evaluate import POSTPROCESSING
from deeplab.model import NETWORK_KEYS, build_model
from wsss.core.errors import ConfigError
from wsss.core.files import atomic_dir, atomic_path
from wsss.crf.refine import crf_marginals
from wsss.crf.settings import CRFSettings
from wsss.data.io import read_rgb, write_mask
from wsss.data.transforms import bilinear_resize
from wsss.data.voc import VOCPaths
from wsss.nets.backbones import default_device
from wsss.nets.normalisation import Normalisation, trained_normalisation

SERVER_FOLDER = Path("results/VOC2012/Segmentation/comp6_test_cls")
# The layouts that hold only the final prediction, by name, and the folder of out_dir it goes to: the VOC server's,
# and a seed folder (`<id>.png` in out_dir itself, what `train-deeplab --labels-root` reads). The "evaluation"
# layout, raw/ and crf/ side by side, is the default.
EVALUATION_LAYOUT = "evaluation"
FINAL_PREDICTION_FOLDERS = {"server": SERVER_FOLDER, "seeds": Path()}


def load_trained(path, device: torch.device | None = None) -> tuple[torch.nn.Module, Normalisation]:
    """The network saved by `train_deeplab` (rebuilt from the options stored with it), in eval mode, and the
    input normalisation it was trained on (its record)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        network = json.loads(saved["network"])
    except (FileNotFoundError, KeyError, RuntimeError, OSError) as exc:
        raise ConfigError(
            f"{path}: not a DeepLab model written by `deeplab train-deeplab` ({exc}). Retrain it."
        ) from None
    normalise = trained_normalisation(saved, path)
    labels = next(value.shape[0] for key, value in reversed(saved["model"].items()) if key.startswith("head."))
    net = build_model(num_classes=labels, **{key: network[key] for key in NETWORK_KEYS if key in network})
    net.load_state_dict(saved["model"])
    return net.to(device or default_device()).eval(), normalise


@torch.no_grad()
def class_probabilities(
    net, image: np.ndarray, *, normalise: Normalisation, scales=(1.0,), flip: bool = False
) -> np.ndarray:
    """K x H x W float32 (K: the network's labels, background included): softmax of full-resolution logits,
    averaged over scales and flips; the network sees the input `normalise` makes (what it was trained on)."""
    device = next(net.parameters()).device
    height, width = image.shape[:2]
    total, count = 0.0, 0
    for factor in scales:
        resized = bilinear_resize(image, max(1, round(height * factor)), max(1, round(width * factor)))
        batch = normalise(resized[None]).to(device)
        if flip:
            batch = torch.cat([batch, batch.flip(-1)])
        logits = F.interpolate(net(batch), size=(height, width), mode="bilinear", align_corners=False)
        probabilities = logits.float().softmax(dim=1)
        if flip:
            probabilities[1] = probabilities[1].flip(-1)
        total += probabilities.sum(dim=0)
        count += len(probabilities)
    return (total / count).cpu().numpy()


def crf_unary(probabilities: np.ndarray) -> np.ndarray:
    """The test-time CRF's unary, M x H*W: -log p of the K x H x W class probabilities, p clipped at 1e-5 (as
    deeplab-pytorch's `unary_from_softmax`)."""
    return -np.log(np.maximum(probabilities.reshape(len(probabilities), -1), 1e-5))


def crf_refine(
    image: np.ndarray, probabilities: np.ndarray, settings: CRFSettings | None = None, /, **crf
) -> np.ndarray:
    """Dense CRF on class probabilities (unary -log p, clipped at 1e-5); returns H x W uint8 labels. The CRF:
    a CRFSettings, or its fields as keywords (the config's `deeplab.crf`)."""
    q = crf_marginals(np.require(image, np.uint8, "C"), crf_unary(probabilities), CRFSettings.resolve(settings, crf))
    return q.argmax(axis=0).astype(np.uint8)


def predict_split(
    model_path,
    dataset: dict,
    split: str,
    out_dir,
    *,
    scales,
    flip: bool,
    crf: dict | None,
    layout: str = EVALUATION_LAYOUT,
    progress: bool = True,
) -> None:
    """Predict every image of `split` (a role such as 'eval', 'test' or 'train', or a split name) into `out_dir`,
    in `layout`: EVALUATION_LAYOUT, or one of FINAL_PREDICTION_FOLDERS."""
    if split in dataset["roles"] and dataset["roles"][split] is None:
        raise ConfigError(f"the dataset has no {split} split (data.{split}_split is null, as for COCO's test split).")
    split = dataset["roles"].get(split, split)
    if split not in dataset["splits"]:
        raise ConfigError(f"split '{split}' is not in the dataset report (it has {', '.join(dataset['splits'])}).")
    settings = None if crf is None else CRFSettings.from_config(crf, "deeplab.crf")
    net, normalise = load_trained(model_path)
    paths = VOCPaths.create(dataset["voc_root"], dataset["sbd_root"])
    raw_folder, crf_folder = POSTPROCESSING  # the folders deeplab.evaluate reads
    with atomic_dir(out_dir) as tmp:  # an interrupted run leaves no half-filled folder behind
        for image_id in tqdm(dataset["splits"][split], desc=f"predict {split}", disable=not progress, mininterval=2.0):
            image = read_rgb(paths.image(image_id))
            probabilities = class_probabilities(net, image, normalise=normalise, scales=scales, flip=flip)
            labels = {raw_folder: probabilities.argmax(axis=0).astype(np.uint8)}
            if settings is not None:
                labels[crf_folder] = crf_refine(image, probabilities, settings)
            if layout == EVALUATION_LAYOUT:
                for name, label_map in labels.items():
                    write_mask(tmp / name / f"{image_id}.png", label_map, atomic=False)
            else:
                final = labels[crf_folder if settings is not None else raw_folder]
                write_mask(tmp / FINAL_PREDICTION_FOLDERS[layout] / f"{image_id}.png", final, atomic=False)


def pack_for_server(predictions_root, tar_path) -> int:
    """Tar `predictions_root`/SERVER_FOLDER with the paths the VOC server expects; returns the file count."""
    root = Path(predictions_root)
    files = sorted((root / SERVER_FOLDER).glob("*.png"))
    if not files:
        raise ConfigError(
            f"{root / SERVER_FOLDER}: no predictions to pack. Run `deeplab predict-deeplab --server-layout`."
        )
    with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w") as archive:
        for path in files:
            archive.add(path, arcname=str(path.relative_to(root)))
    return len(files)
