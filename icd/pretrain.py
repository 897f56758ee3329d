"""A stand-in for ImageNet pretraining, and a measurement of the ICD premise.

ICD assumes a pretrained backbone whose features put an image's foreground and background pixels
in separate clusters, so that the top direction the bottom-up loss finds separates them. No
ImageNet weights can be downloaded for the synthetic default pipeline, so `pretrain_backbone`
trains the backbone on a separate pretext classification task (`wsss.data.synthetic`), and
`measure_premise` checks, on the segmentation data, whether the premise holds for those weights
compared with random init.

The stand-in is trained on the input of `normalisation` (`wsss.nets.normalisation`; the workflow's default is
the official `x - 127` with no scaling: BatchNorm and Kaiming init cope with the 0..255 range) and its
file records it, so every later step feeds it the input it was trained on. The premise is measured on
the input the measured weights expect.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from wsss.core.errors import ConfigError, DataError
from wsss.data.classes import FOREGROUND_CLASSES, IGNORE_LABEL
from wsss.data.io import read_mask, read_rgb
from wsss.data.voc import VOCPaths, read_split
from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights, save_backbone
from wsss.nets.normalisation import Normalisation, from_scratch, weights_normalisation

OUTPUT_STRIDE = 8
AUGMENTED_SPLIT = "train_aug"  # the premise is measured on the weakly-labelled training split


class _PretextNet(nn.Module):
    """Backbone + temporary head: global average pool of fc7, then a linear classifier."""

    def __init__(self, backbone: VGG16DeepLab, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.feature_channels["fc7"], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)["fc7"].mean(dim=(2, 3)))


def _evaluate(
    net: _PretextNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    num_classes: int,
    normalise: Callable[[torch.Tensor], torch.Tensor],
):
    """(mean loss, accuracy, confusion matrix [true, predicted]) in eval mode."""
    net.eval()
    loss_sum = 0.0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = net(normalise(images[start : start + batch_size]))
            target = labels[start : start + batch_size]
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            confusion += torch.bincount(target * num_classes + logits.argmax(1), minlength=num_classes**2).view(
                num_classes, num_classes
            )
    n = max(1, len(images))
    return loss_sum / n, confusion.trace().item() / n, confusion


def pretrain_backbone(
    out_path: str | os.PathLike,
    *,
    seed: int = 0,
    width: float = 0.125,
    batch_norm: bool = True,
    num_images: int = 4000,
    image_size: int = 96,
    epochs: int = 10,
    batch_size: int = 32,
    lr: float = 0.01,
    weight_decay: float = 5e-4,
    val_fraction: float = 0.1,
    normalisation: str,
    log: Callable[[str], None] | None = print,
    progress: bool = True,
) -> dict:
    """Train VGG16DeepLab(width, batch_norm, dropout=0) on the pretext task; save the backbone.

    SGD (momentum 0.9, weight decay on conv/linear weights only) with a one-epoch linear warm-up
    then cosine decay per iteration; random horizontal and vertical flips. Images come from
    `wsss.data.synthetic.pretext_images(seed, num_images, image_size)`; the last `val_fraction`
    are held out for a validation accuracy. Deterministic on CPU for a fixed seed and thread
    count. Its input is `normalisation` (`auto`: the official x - 127, `wsss.nets.normalisation`). The file at
    `out_path` (written atomically) holds the backbone's DeepLab-format state dict (features.*, fc6.*,
    fc7.*; the head is dropped) for `load_vgg16_weights`, recording `normalisation`. Returns metrics.
    """
    from wsss.data.synthetic import PRETEXT_CLASSES, pretext_images

    log = log or (lambda _line: None)
    normalise = from_scratch(normalisation, "vgg16")

    start_time = time.perf_counter()
    images_np, labels_np = pretext_images(seed, num_images, image_size)
    images = torch.from_numpy(np.array(images_np, dtype=np.uint8))
    labels = torch.from_numpy(np.asarray(labels_np, dtype=np.int64))
    num_val = max(1, round(num_images * val_fraction))
    if num_images - num_val < batch_size:
        raise ValueError(f"num_images {num_images} leaves fewer than batch_size {batch_size} training images")
    train_x, train_y = images[:-num_val], labels[:-num_val]
    val_x, val_y = images[-num_val:], labels[-num_val:]

    # No torch.use_deterministic_algorithms: on the CPU every kernel this loop runs is already deterministic for a
    # fixed thread count (the same weights with and without it), and the mode fills every new tensor before use.
    with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG untouched
        torch.manual_seed(seed)
        backbone = VGG16DeepLab(width=width, batch_norm=batch_norm, dropout=0.0)
        net = _PretextNet(backbone, len(PRETEXT_CLASSES))
    generator = torch.Generator().manual_seed(seed)

    decay = [p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if not (n.endswith("weight") and p.ndim > 1)]
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr,
        momentum=0.9,
    )
    steps_per_epoch = len(train_x) // batch_size  # drop the last partial batch (BN)
    total_steps = steps_per_epoch * epochs
    warmup = min(steps_per_epoch, total_steps)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    history = []
    step = 0
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train_x), generator=generator)
        loss_sum = correct = seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"pretrain {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            idx = order[batch * batch_size : (batch + 1) * batch_size]
            x = normalise(train_x[idx])
            flips = torch.rand(2, len(idx), generator=generator) < 0.5
            x = torch.where(flips[0, :, None, None, None], x.flip(3), x)
            x = torch.where(flips[1, :, None, None, None], x.flip(2), x)
            y = train_y[idx]
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"pretraining diverged at epoch {epoch + 1}, step {step + 1} (loss {loss.item()}); "
                    f"lower pretrain.lr (now {lr:g}) or use model.backbone: vgg16_bn."
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}")
        val_loss, val_acc, confusion = _evaluate(net, val_x, val_y, 2 * batch_size, len(PRETEXT_CLASSES), normalise)
        record = {
            "epoch": epoch + 1,
            "loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "lr": lr_at(step - 1),
        }
        history.append(record)
        log(
            f"pretrain epoch {epoch + 1}/{epochs}: loss {record['loss']:.4f} train acc "
            f"{record['train_accuracy']:.3f} val loss {val_loss:.4f} val acc {val_acc:.3f} lr {record['lr']:.2e}"
        )

    save_backbone(backbone, out_path, normalise.name)
    seconds = time.perf_counter() - start_time
    return {
        "val_accuracy": history[-1]["val_accuracy"] if history else float("nan"),
        "train_accuracy": history[-1]["train_accuracy"] if history else float("nan"),
        "chance_accuracy": 1.0 / len(PRETEXT_CLASSES),
        "epochs": epochs,
        "seconds": seconds,
        "history": history,
        "val_confusion": confusion.tolist() if history else [],  # rows: true class, columns: predicted
        # The backbone expects exactly this input downstream; its file records the name.
        "normalisation": normalise.name,
        "normalisation_description": normalise.description,
        "settings": {
            "seed": seed,
            "width": width,
            "batch_norm": batch_norm,
            "num_images": num_images,
            "num_val": num_val,
            "image_size": image_size,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "pretext_classes": list(PRETEXT_CLASSES),
        },
    }


# ---------------------------------------------------------------------------------------------
# The ICD premise


def top_direction(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit w maximising mean (w^T f)^2 over rows f: the top eigenvector of F^T F / N.

    This is the optimum of ICD's bottom-up loss for one class. Returns (w, eigenvalues in
    descending order). The sign of w is arbitrary (ICD fixes it with the CAM; callers here take
    the better orientation).
    """
    f = np.asarray(features, dtype=np.float64)
    moment = f.T @ f / max(1, len(f))
    values, vectors = np.linalg.eigh(moment)
    return vectors[:, -1], values[::-1]


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties counted half); NaN when one class is empty."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _oriented(auc: float) -> float:
    return max(auc, 1.0 - auc) if not math.isnan(auc) else auc


def _downsample_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest label at each feature's centre: stride-8 feature (i, j) is centred on pixel (8i, 8j)."""
    rows = np.minimum(np.arange(shape[0]) * OUTPUT_STRIDE, mask.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) * OUTPUT_STRIDE, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def _build_model(weights, width: float, batch_norm: bool, seed: int) -> VGG16DeepLab:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VGG16DeepLab(width=width, batch_norm=batch_norm, dropout=0.0)
    if weights is not None:
        load_vgg16_weights(model, weights)
    return model.eval()


def _collect(
    model: VGG16DeepLab,
    dataset_root: Path,
    ids: list[str],
    feature: str,
    part_dir: Path | None,
    normalise: Normalisation,
):
    """Per single-class image: (class index, features (n, C), fg labels (n,), part labels or None)."""
    paths = VOCPaths.create(dataset_root)
    items = []
    for image_id in ids:
        mask_path = paths.ground_truth(AUGMENTED_SPLIT, image_id)
        if not mask_path.is_file():
            continue  # images without ground truth cannot be scored
        mask = read_mask(mask_path)
        present = [c for c in np.unique(mask) if c not in (0, IGNORE_LABEL)]
        if len(present) != 1:
            continue  # the bottom-up loss uses single-class images only
        rgb = read_rgb(paths.image(image_id))
        with torch.no_grad():
            x = normalise(rgb[None])
            fmap = model(x)[feature][0].numpy()
        labels = _downsample_mask(mask, fmap.shape[1:]).ravel()
        keep = labels != IGNORE_LABEL
        feats = fmap.reshape(fmap.shape[0], -1).T[keep]
        part = None
        if part_dir is not None and (part_dir / f"{image_id}.png").is_file():
            part_mask = read_mask(part_dir / f"{image_id}.png")
            part = _downsample_mask(part_mask, fmap.shape[1:]).ravel()[keep] > 0
        items.append((int(present[0]), feats.astype(np.float64), labels[keep] == present[0], part))
    return items


def _premise_for_model(model, dataset_root, ids, feature, part_dir, normalise: Normalisation) -> dict:
    items = _collect(model, dataset_root, ids, feature, part_dir, normalise)
    if not items:
        raise DataError(f"{dataset_root}: no single-class images with ground truth among the {len(ids)} ids")
    # Feature BatchNorm as in ICD (gamma 1, beta 0): statistics over all images, like batch stats.
    all_feats = np.concatenate([f for _, f, _, _ in items])
    mean, std = all_feats.mean(0), np.sqrt(all_feats.var(0) + 1e-5)
    per_class = {}
    for cls in sorted({c for c, _, _, _ in items}):
        chosen = [it for it in items if it[0] == cls]
        feats = (np.concatenate([f for _, f, _, _ in chosen]) - mean) / std
        fg = np.concatenate([g for _, _, g, _ in chosen])
        w, eig = top_direction(feats)
        score = feats @ w
        entry = {
            "images": len(chosen),
            "pixels": int(fg.size),
            "fg_fraction": float(fg.mean()),
            "auc_fg": _oriented(roc_auc(score, fg)),
            "auc_fg_lda": _oriented(roc_auc(feats @ _lda_direction(feats, fg), fg)),
            "eigenvalue_ratio": float(eig[0] / max(eig[1], 1e-12)),
        }
        parts = [p for _, _, _, p in chosen]
        if all(p is not None for p in parts):
            part = np.concatenate(parts)
            entry["auc_part"] = _oriented(roc_auc(score, part))
            entry["auc_part_within_fg"] = _oriented(roc_auc(score[fg], part[fg]))
        per_class[FOREGROUND_CLASSES[cls - 1]] = entry
    result = {"feature": feature, "per_class": per_class}
    for key in ("auc_fg", "auc_fg_lda", "auc_part", "auc_part_within_fg"):
        values = [e[key] for e in per_class.values() if key in e and not math.isnan(e[key])]
        if values:
            result[f"mean_{key}"] = float(np.mean(values))
    return result


def _lda_direction(feats: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """Fisher direction (in-sample): roughly what a trained linear read-out of these features gets."""
    if fg.all() or not fg.any():
        return np.ones(feats.shape[1])
    cov = np.cov(feats[fg], rowvar=False) + np.cov(feats[~fg], rowvar=False)
    cov = np.atleast_2d(cov) + 1e-3 * np.eye(feats.shape[1])
    return np.linalg.solve(cov, feats[fg].mean(0) - feats[~fg].mean(0))


def measure_premise(
    weights: str | os.PathLike | dict | None,
    dataset_root: str | os.PathLike,
    *,
    width: float,
    batch_norm: bool,
    ids: Sequence[str] | None = None,
    feature: str = "conv5",
    seed: int = 0,
    compare_random: bool = False,
    part_dir: str | os.PathLike | None = None,
    normalisation: str,
) -> dict:
    """Does the top bottom-up direction of each class separate its foreground from background?

    For every class, over its single-class images (ids from ImageSets/SegmentationAug/train_aug.txt unless given; masks
    from SegmentationClassAug), takes `feature` maps of the backbone in eval mode (on the input `normalisation` the
    weights expect, checked against their file by `wsss.nets.normalisation.weights_normalisation`; random init takes
    it as given, auto meaning x - 127), normalises each channel with statistics over all those images (ICD's feature
    BatchNorm), finds the top eigenvector of the class's second-moment matrix (the optimum of the bottom-up loss)
    and scores every pixel by its projection. Reports per class the ROC AUC of that score against the ground-truth
    foreground (mask sampled at feature centres, 255 ignored) in the better orientation
    (max(auc, 1 - auc)); `auc_fg_lda`, the in-sample Fisher direction's AUC, says what a linear
    read-out of the same features reaches. With `part_dir` (masks whose nonzero pixels mark the
    class-coloured part) also the part-vs-rest AUCs. `weights` None means random init (Kaiming,
    `seed`); with weights and `compare_random`, `result["random_init"]` holds the same
    measurement for a randomly initialised backbone.
    """
    dataset_root = Path(dataset_root)
    part = Path(part_dir) if part_dir is not None else None
    id_list = list(ids) if ids is not None else read_split(VOCPaths.create(dataset_root), AUGMENTED_SPLIT)
    normalise = (
        from_scratch(normalisation, "vgg16")
        if weights is None
        else weights_normalisation(weights, normalisation, key="pretrain.normalisation")
    )
    result = _premise_for_model(
        _build_model(weights, width, batch_norm, seed), dataset_root, id_list, feature, part, normalise
    )
    result["weights"] = None if weights is None else (str(weights) if not isinstance(weights, dict) else "<state dict>")
    if weights is not None and compare_random:
        result["random_init"] = _premise_for_model(
            _build_model(None, width, batch_norm, seed), dataset_root, id_list, feature, part, normalise
        )
    return result
