"""Superpixels: Felzenszwalb, then greedy hierarchical merging by backbone features to <= N regions.

As the official ICD code: Felzenszwalb (sigma 0.8, k 75, min_size 75), each region described by the
mean of the backbone's conv5_3 features (the dense map bilinearly resized to the padded input and
cropped to the image), then the most similar pair is merged until at most `max_regions` remain, with
`sim(i, j) = cos(f_i, f_j) + 1 - (size_i + size_j) / (h * w)` and no adjacency constraint; a merged
region's feature is the size-weighted mean. Only the merged region's similarities change after a
merge, so each step updates one row of the similarity matrix (vectorised) instead of recomputing it.

A deliberate deviation: the official script feeds its weights raw 0..255 RGB, without even the
`x - 127` its training uses; here the backbone gets the input its weights expect
(`wsss.nets.normalisation`), as in every other step, so the merge features are those the weights compute
on proper input (torchvision's VGG16, fed raw 0..255, would see values up to 255 instead of about +-2).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from skimage.segmentation import felzenszwalb

if TYPE_CHECKING:
    from wsss.nets.normalisation import Normalisation


def felzenszwalb_regions(image: np.ndarray, *, sigma: float, scale: float, min_size: int) -> np.ndarray:
    """Felzenszwalb regions of an RGB uint8 image (Euclidean RGB distance, as the original C++ code)."""
    return felzenszwalb(image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=-1).astype(np.int32)


def _bilinear_taps(size: int, source: int, canvas: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For output pixels 0..size-1 of a `source` -> `canvas` resize (align_corners=True, as MXNet's
    BilinearResize2D): the two source taps and their weights."""
    position = np.arange(size) * ((source - 1) / max(canvas - 1, 1))
    low = np.minimum(np.floor(position).astype(np.int64), source - 1)
    high = np.minimum(low + 1, source - 1)
    weight_high = position - low
    return low, high, 1.0 - weight_high, weight_high


def region_features(regions: np.ndarray, dense: np.ndarray, canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean feature and pixel count of each region, as the official code computes them.

    `dense` (D x h x w) is the backbone's map of the image padded at the bottom/right to `canvas` x
    `canvas`; the official code resizes it bilinearly to the canvas, crops the image and averages per
    region. Bilinear resizing is linear, so each pixel's 4 taps are accumulated per region instead:
    R x (h*w) weights times the features, never the D x H x W upsampled map (768 MB for VOC images).
    """
    height, width = regions.shape
    depth, feature_h, feature_w = dense.shape
    if height > canvas or width > canvas:
        raise ValueError(f"image {height}x{width} is larger than the feature canvas {canvas}")
    y0, y1, wy0, wy1 = _bilinear_taps(height, feature_h, canvas)
    x0, x1, wx0, wx1 = _bilinear_taps(width, feature_w, canvas)
    count = np.bincount(regions.ravel())
    cells = feature_h * feature_w
    weights = np.zeros(count.size * cells, np.float64)
    labels = regions.astype(np.int64) * cells
    for ys, wy in ((y0, wy0), (y1, wy1)):
        for xs, wx in ((x0, wx0), (x1, wx1)):
            index = labels + (ys[:, None] * feature_w + xs[None, :])
            weights += np.bincount(index.ravel(), (wy[:, None] * wx[None, :]).ravel(), minlength=weights.size)
    sums = weights.reshape(count.size, cells) @ dense.reshape(depth, cells).T.astype(np.float64)
    return sums / np.maximum(count, 1)[:, None], count


def _similarity_row(index: int, features: np.ndarray, sizes: np.ndarray, alive: np.ndarray, area: int) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1)
    cosine = features @ features[index] / np.maximum(norms * norms[index], 1e-12)
    row = cosine + 1.0 - (sizes + sizes[index]) / area
    row[~alive] = -np.inf
    row[index] = -np.inf
    return row


def merge_regions(regions: np.ndarray, features: np.ndarray, sizes: np.ndarray, max_regions: int) -> np.ndarray:
    """Greedily merge the most similar region pair until at most `max_regions` remain.

    `regions` (H x W, labels 0..R-1), per-region `features` (R x D) and `sizes` (R). Returns the merged
    map relabelled 0..K-1 in order of first appearance of the surviving labels (deterministic).
    """
    features = np.array(features, dtype=np.float64)
    sizes = np.array(sizes, dtype=np.float64)
    alive = sizes > 0
    area = regions.size
    owner = np.arange(len(sizes))
    norms = np.linalg.norm(features, axis=1)
    similarity = features @ features.T / np.maximum(np.outer(norms, norms), 1e-12)
    similarity += 1.0 - (sizes[:, None] + sizes[None, :]) / area
    similarity[~alive, :] = -np.inf
    similarity[:, ~alive] = -np.inf
    np.fill_diagonal(similarity, -np.inf)
    while alive.sum() > max_regions:
        i, j = divmod(int(np.argmax(similarity)), similarity.shape[1])
        i, j = min(i, j), max(i, j)
        total = sizes[i] + sizes[j]
        features[i] = features[i] * (sizes[i] / total) + features[j] * (sizes[j] / total)
        sizes[i], sizes[j] = total, 0
        alive[j] = False
        owner[owner == j] = i
        similarity[j, :] = similarity[:, j] = -np.inf
        row = _similarity_row(i, features, sizes, alive, area)
        similarity[i, :] = similarity[:, i] = row
    merged = owner[regions]
    _, first = np.unique(merged.ravel(), return_index=True)
    order = merged.ravel()[np.sort(first)]
    relabel = np.zeros(len(sizes), np.int32)
    relabel[order] = np.arange(order.size)
    return relabel[merged]


def backbone_dense_features(model, image: np.ndarray, canvas: int, normalise: Normalisation) -> np.ndarray:
    """conv5_3 features (D x h x w) of the image padded to canvas x canvas, as the official script, on the input
    the weights expect (`normalise`; the padding is its zero)."""
    import torch

    from wsss.data.transforms import pad_to

    padded = pad_to(image, canvas, canvas, np.asarray(normalise.pad_rgb, np.uint8))
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(normalise(padded[None]).to(device))["conv5"][0].float().cpu().numpy()


def image_superpixels(
    image: np.ndarray,
    model,
    *,
    sigma: float,
    scale: float,
    min_size: int,
    max_regions: int,
    canvas: int,
    normalise: Normalisation,
) -> np.ndarray:
    """The merged superpixel map (H x W, uint8 or uint16 ids 0..K-1) of one RGB image."""
    regions = felzenszwalb_regions(image, sigma=sigma, scale=scale, min_size=min_size)
    dense = backbone_dense_features(model, image, canvas, normalise)
    features, sizes = region_features(regions, dense, canvas)
    merged = merge_regions(regions, features, sizes, max_regions)
    return merged.astype(np.uint8 if max_regions <= 256 else np.uint16)


def compute_superpixel_shard(
    out_path,
    ids: list[str],
    *,
    image_path: Callable[[str], Path],
    weights: str,
    width: float,
    batch_norm: bool,
    normalisation: str,
    sigma: float,
    scale: float,
    min_size: int,
    max_regions: int,
    feature_input_size: int,
    progress: bool = True,
) -> dict:
    """Merged superpixels of `ids` (their files: `image_path(id)`), saved as one npz shard {id: map}; returns
    region-count statistics.

    Features come from the same pretrained backbone the ICD stage starts from (`weights`), on the input
    `normalisation` it expects (checked against the file: `wsss.nets.normalisation.weights_normalisation`).
    """
    from tqdm import tqdm

    from wsss.core.errors import DataError
    from wsss.core.shards import save_shard
    from wsss.data.io import read_rgb
    from wsss.nets.backbones import VGG16DeepLab, default_device, load_vgg16_weights
    from wsss.nets.normalisation import weights_normalisation

    normalise = weights_normalisation(weights, normalisation, key="pretrain.normalisation")
    model = VGG16DeepLab(width=width, batch_norm=batch_norm)
    load_vgg16_weights(model, weights)
    model.to(default_device()).eval()
    maps, counts = {}, []
    for image_id in tqdm(ids, desc="superpixels", disable=not progress, mininterval=2.0):
        image = read_rgb(image_path(image_id))
        if max(image.shape[:2]) > feature_input_size:
            raise DataError(
                f"{image_path(image_id)}: image is {image.shape[1]}x{image.shape[0]}, larger than "
                f"superpixels.feature_input_size {feature_input_size}. Raise that setting."
            )
        maps[image_id] = image_superpixels(
            image,
            model,
            sigma=sigma,
            scale=scale,
            min_size=min_size,
            max_regions=max_regions,
            canvas=feature_input_size,
            normalise=normalise,
        )
        counts.append(int(maps[image_id].max()) + 1)
    save_shard(out_path, maps)
    return {
        "images": len(ids),
        "regions_mean": float(np.mean(counts)) if counts else 0.0,
        "regions_max": int(max(counts, default=0)),
    }
