"""Pretext pretraining (saved weights, learning, determinism) and the ICD premise measurement."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from icd.pretrain import measure_premise, pretrain_backbone, roc_auc, top_direction
from wsss.core.errors import ConfigError
from wsss.data.classes import class_index
from wsss.data.io import write_jpeg, write_mask
from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights
from wsss.nets.normalisation import weights_normalisation

TINY = dict(
    width=0.0625,
    batch_norm=True,
    num_images=80,
    image_size=32,
    batch_size=16,
    lr=0.05,
    weight_decay=5e-4,
    normalisation="minus127",
    log=None,
    progress=False,
)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One tiny pretraining run, shared by the tests that only read its outputs."""
    path = tmp_path_factory.mktemp("pretrain") / "backbone.pt"
    metrics = pretrain_backbone(path, seed=3, epochs=2, **TINY)
    return path, metrics


def test_saved_backbone_loads_strictly(pretrained):
    path, metrics = pretrained
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert not any(k.startswith("head") for k in state)
    model = VGG16DeepLab(width=TINY["width"], batch_norm=True)
    load_vgg16_weights(model, path)  # raises on any missing/unexpected key
    assert torch.equal(model.state_dict()["fc7.weight"], state["fc7.weight"])
    assert metrics["epochs"] == 2 and len(metrics["history"]) == 2
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    # Trained on the official x - 127, and the file says so: every later step feeds it that input.
    assert metrics["normalisation"] == "minus127"
    assert weights_normalisation(path, key="pretrain.normalisation").name == "minus127"


def test_training_lowers_the_loss(tmp_path):
    metrics = pretrain_backbone(tmp_path / "b.pt", seed=0, epochs=3, **{**TINY, "num_images": 120})
    losses = [h["loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0]


def _seed_3_and_another_run(pretrained, path, seed: int) -> tuple[dict, dict]:
    """The shared seed-3 weights and those of a second run with `seed`, everything else equal; same keys."""
    pretrain_backbone(path, seed=seed, epochs=2, **TINY)
    first = torch.load(pretrained[0], weights_only=True)
    second = torch.load(path, weights_only=True)
    assert first.keys() == second.keys()
    return first, second


def test_same_seed_same_weights(tmp_path, pretrained):
    first, second = _seed_3_and_another_run(pretrained, tmp_path / "again.pt", seed=3)
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_another_seed_other_weights(tmp_path, pretrained):
    """With every other setting equal, another seed changes every floating-point tensor: a seed that
    never reaches the run (a constant in its place) would reproduce seed 3's weights exactly."""
    first, second = _seed_3_and_another_run(pretrained, tmp_path / "other.pt", seed=4)
    floating = [key for key in first if first[key].is_floating_point()]
    assert floating and [key for key in floating if torch.equal(first[key], second[key])] == []


def test_global_rng_and_determinism_flag_untouched(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    pretrain_backbone(tmp_path / "c.pt", seed=1, epochs=1, **TINY)
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_divergence_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="diverged"):
        pretrain_backbone(tmp_path / "d.pt", seed=0, epochs=1, **{**TINY, "lr": 1e12, "batch_norm": False})
    assert not (tmp_path / "d.pt").exists()


def test_top_direction_matches_numpy_eigh():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=12)
    w, values = top_direction(feats)
    ref_values, ref_vectors = np.linalg.eigh(feats.T @ feats / len(feats))
    assert abs(abs(w @ ref_vectors[:, -1]) - 1) < 1e-9
    np.testing.assert_allclose(values, ref_values[::-1], rtol=1e-9, atol=1e-12)
    # It maximises the bottom-up objective mean (w^T f)^2 over unit vectors.
    best = np.mean((feats @ w) ** 2)
    for _ in range(50):
        v = rng.normal(size=12)
        v /= np.linalg.norm(v)
        assert np.mean((feats @ v) ** 2) <= best + 1e-9


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 5, size=300).astype(float)
    labels = rng.random(300) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert np.isnan(roc_auc(scores, np.zeros(300, bool)))


def _write_toy_dataset(root, n=8, size=48):
    """VOC layout: stripy background, checkerboard square foreground of class 'cat' or 'car'."""
    rng = np.random.default_rng(0)
    ids = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        image_id = f"toy_{i:03d}"
        rgb = np.empty((size, size, 3), np.uint8)
        rgb[:] = (100 + 40 * np.sin(xx / 3.0 + i))[..., None].astype(np.uint8)
        mask = np.zeros((size, size), np.uint8)
        top, left = rng.integers(4, size // 2, size=2)
        box = (slice(top, top + size // 2 - 2), slice(left, left + size // 2 - 2))
        mask[box] = class_index("cat" if i % 2 else "car")
        checker = (((yy // 2) + (xx // 2)) % 2 * 120 + 60).astype(np.uint8)
        rgb[box] = checker[box][..., None]
        mask[box[0].start, box[1]] = 255  # an ignore line on the object edge
        if i == n - 1:  # a two-class image: skipped by the premise measurement
            mask[:4, :4] = class_index("dog")
        write_jpeg(root / "JPEGImages" / f"{image_id}.jpg", rgb)
        write_mask(root / "SegmentationClassAug" / f"{image_id}.png", mask)
        ids.append(image_id)
    lists = root / "ImageSets" / "SegmentationAug"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text("\n".join(ids) + "\n")
    return ids


def test_measure_premise_on_toy_dataset(tmp_path):
    _write_toy_dataset(tmp_path)
    model = VGG16DeepLab(width=0.125, batch_norm=False)
    result = measure_premise(
        model.state_dict(), tmp_path, width=0.125, batch_norm=False, compare_random=True, normalisation="minus127"
    )
    assert set(result["per_class"]) == {"car", "cat"}
    assert result["per_class"]["cat"]["images"] == 3  # image 7 has two classes
    for run in (result, result["random_init"]):
        for entry in run["per_class"].values():
            assert 0.5 <= entry["auc_fg"] <= 1.0
            assert entry["auc_fg"] <= entry["auc_fg_lda"] + 1e-9 or entry["auc_fg_lda"] > 0.95
        assert 0.5 <= run["mean_auc_fg"] <= 1.0
    # Random init features still separate a checkerboard from smooth stripes.
    assert result["random_init"]["mean_auc_fg_lda"] > 0.8
    alone = measure_premise(None, tmp_path, width=0.125, batch_norm=False, normalisation="minus127")
    assert "random_init" not in alone and alone["weights"] is None
