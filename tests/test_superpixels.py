"""Superpixel merging against a literal re-implementation of the official greedy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from icd.superpixels import felzenszwalb_regions, merge_regions, region_features


def reference_merge(regions: np.ndarray, features: np.ndarray, sizes: np.ndarray, limit: int) -> np.ndarray:
    """The official algorithm written naively: full pairwise recomputation after every merge."""
    features = features.astype(np.float64).copy()
    sizes = sizes.astype(np.float64).copy()
    members = {k: {k} for k in range(len(sizes)) if sizes[k] > 0}
    area = regions.size
    while len(members) > limit:
        best, pair = -np.inf, None
        for i in sorted(members):
            for j in sorted(members):
                if j <= i:
                    continue
                cos = features[i] @ features[j] / (np.linalg.norm(features[i]) * np.linalg.norm(features[j]))
                sim = cos + 1 - (sizes[i] + sizes[j]) / area
                if sim > best:
                    best, pair = sim, (i, j)
        i, j = pair
        total = sizes[i] + sizes[j]
        features[i] = features[i] * sizes[i] / total + features[j] * sizes[j] / total
        sizes[i] = total
        members[i] |= members.pop(j)
    out = np.empty_like(regions)
    for root, labels in members.items():
        out[np.isin(regions, list(labels))] = root
    return out


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    return len(np.unique(pairs[0])) == len(np.unique(pairs[1])) == pairs.shape[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_matches_reference(seed):
    rng = np.random.default_rng(seed)
    regions = rng.integers(0, 30, (23, 37))
    regions = np.unique(regions, return_inverse=True)[1].reshape(regions.shape)
    sizes = np.bincount(regions.ravel())
    features = rng.standard_normal((sizes.size, 8)) + 0.5
    merged = merge_regions(regions, features, sizes, 7)
    assert merged.max() + 1 == 7 and merged.shape == regions.shape
    assert same_partition(merged, reference_merge(regions, features, sizes, 7))
    # Each merged region is a union of original regions: a partition coarser than the input.
    assert all(len(np.unique(merged[regions == k])) == 1 for k in range(sizes.size))


def test_merge_keeps_fewer_regions_untouched_and_is_deterministic():
    rng = np.random.default_rng(3)
    regions = rng.integers(0, 5, (10, 12))
    sizes = np.bincount(regions.ravel())
    features = rng.standard_normal((5, 4))
    merged = merge_regions(regions, features, sizes, 64)
    assert same_partition(merged, regions)
    # Labels are renumbered 0..K-1 by first appearance in raster order.
    assert merged.ravel()[0] == 0 and set(np.unique(merged)) == set(range(5))
    assert np.array_equal(merge_regions(regions, features, sizes, 3), merge_regions(regions, features, sizes, 3))


def test_region_features_equal_the_upsample_then_average_definition():
    rng = np.random.default_rng(0)
    height, width, canvas = 45, 61, 65
    regions = rng.integers(0, 9, (height, width))
    dense = rng.standard_normal((6, 9, 9)).astype(np.float32)
    features, sizes = region_features(regions, dense, canvas)
    upsampled = torch.nn.functional.interpolate(
        torch.from_numpy(dense)[None], size=(canvas, canvas), mode="bilinear", align_corners=True
    )[0, :, :height, :width].numpy()
    expected = np.stack([upsampled[:, regions == k].mean(axis=1) for k in range(9)])
    np.testing.assert_allclose(features, expected, atol=1e-5)
    assert np.array_equal(sizes, np.bincount(regions.ravel()))


def test_felzenszwalb_partitions_the_image_and_merge_bounds_it():
    rng = np.random.default_rng(0)
    image = np.zeros((60, 90, 3), np.uint8)
    for _ in range(12):
        y, x = rng.integers(0, 50), rng.integers(0, 80)
        image[y : y + 15, x : x + 20] = rng.integers(0, 255, 3)
    regions = felzenszwalb_regions(image, sigma=0.8, scale=75, min_size=10)
    assert regions.shape == (60, 90) and regions.min() == 0
    features, sizes = region_features(regions, rng.standard_normal((4, 8, 12)), 97)
    merged = merge_regions(regions, features, sizes, 5)
    assert merged.max() + 1 == min(5, regions.max() + 1) and (sizes > 0).all()


def test_shards_store_non_square_maps_in_their_orientation(tmp_path):
    """The official script saved `np.array([m, 0, 0]).T.reshape(h, w, 3)`, which scrambles non-square maps."""
    from wsss.core.shards import ShardStore, save_shard

    rng = np.random.default_rng(0)
    height, width = 37, 53
    maps = {
        "tall": rng.integers(0, 64, (width, height), dtype=np.uint8),
        "wide": np.repeat(np.arange(width, dtype=np.uint8)[None], height, axis=0),
    }
    save_shard(tmp_path / "shard_0.npz", maps)
    store = ShardStore([tmp_path / "shard_0.npz"])
    for image_id, expected in maps.items():
        assert np.array_equal(store[image_id], expected) and store[image_id].dtype == np.uint8
    wide = maps["wide"]
    official = (
        np.array([wide, np.zeros_like(wide), np.zeros_like(wide)]).astype(np.uint8).T.reshape(height, width, 3)[..., 0]
    )
    assert not np.array_equal(official, wide)  # the bug this layout avoids
    assert "missing" not in store
    with pytest.raises(Exception, match="no entry for image 'missing'"):
        store["missing"]
