"""ICD training end to end on a tiny synthetic set: superpixel shards, loss decrease, checkpoint resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from icd.train import epoch_order, train_icd
from tests.conftest import ICD_TEST_WIDTH
from tests.workflow_helpers import (
    assert_a_killed_run_resumes,
    assert_divergence_keeps_the_checkpoint,
    differing_weights,
    run_under_torchrun,
    trained_weights,
)
from wsss.core.config import load_config
from wsss.core.errors import ConfigError
from wsss.core.shards import ShardStore, save_shard, shard_ids
from wsss.data.io import image_size, read_rgb
from wsss.nets.backbones import VGG16DeepLab
from wsss.training import poly_lr

WIDTH = ICD_TEST_WIDTH


def icd_options(**overrides) -> dict:
    config = load_config(
        overrides={
            "icd": {
                "epochs": 3,
                "batch_size": 8,
                "crop_size": 48,
                "lr": 0.01,
                "dropout": 0.0,
                "warmup_epochs": 1,
                **overrides,
            }
        }
    )
    return {"model": {**config["model"], "width": WIDTH}, "icd": config["icd"], "seed": 0, "normalisation": "minus127"}


def train(folder, dataset: dict, prepared, **overrides) -> dict:
    """train_icd in `folder` on the prepared backbone and superpixel shards, with icd_options(**overrides)."""
    weights, shards = prepared
    return train_icd(
        folder, dataset=dataset, superpixel_shards=shards, weights=weights, progress=False, **icd_options(**overrides)
    )


def train_and_score(folder, dataset: dict, prepared) -> tuple[dict, list[str], Path]:
    """One epoch of training in `folder` (model.pt), then every training image's score maps on a 65 px canvas
    (folder/scores.npz): the options trained with, the training ids and the scores shard."""
    from icd.scores import infer_scores_shard

    train(folder, dataset, prepared, epochs=1)
    options = icd_options(epochs=1)  # what it trained with
    ids = dataset["splits"]["train_aug"]
    infer_scores_shard(
        folder / "scores.npz",
        ids,
        dataset=dataset,
        model_path=folder / "model.pt",
        superpixel_shards=prepared[1],
        model=options["model"],
        icd=options["icd"],
        normalisation="minus127",
        inference_size=65,
        progress=False,
    )
    return options, ids, folder / "scores.npz"


def test_superpixel_shards_cover_the_split_with_bounded_regions(tiny_dataset, prepared):
    store = ShardStore(prepared[1])
    assert store.ids() == sorted(tiny_dataset["splits"]["train_aug"])
    for image_id in store.ids():
        regions = store[image_id]
        image_path = f"{tiny_dataset['voc_root']}/JPEGImages/{image_id}.jpg"
        assert regions.shape == image_size(image_path) and regions.dtype == np.uint8
        assert set(np.unique(regions)) == set(range(regions.max() + 1)) and regions.max() < 8


def _train_command(dataset_file, shards, weights, out_dir, options) -> list[str]:
    return [
        sys.executable,
        "-m",
        "icd",
        "train-icd",
        "--dataset",
        str(dataset_file),
        "--superpixels",
        *shards,
        "--weights",
        str(weights),
        "--options",
        json.dumps(options),
        "--out-dir",
        str(out_dir),
    ]


def test_training_lowers_the_cam_loss_and_a_killed_run_resumes_to_identical_weights(tiny_dataset, prepared, tmp_path):
    weights, shards = prepared
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(tiny_dataset))
    options = icd_options(epochs=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    full = tmp_path / "full"
    subprocess.run(
        _train_command(dataset_file, shards, weights, full, options), check=True, env=env, capture_output=True
    )
    history = json.loads((full / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert history[-1]["loss_cam"] < history[0]["loss_cam"]
    assert history[1]["lr"] == pytest.approx(poly_lr(0.01, 1, 4, 0.9))
    assert {"cat", "boat"} <= set(history[0]["sign"]) and set(history[0]["sign"].values()) <= {-1, 1}

    # Kill a second run with SIGKILL once its first checkpoint exists, then run the same command again.
    assert_a_killed_run_resumes(
        lambda out_dir: _train_command(dataset_file, shards, weights, out_dir, options),
        tmp_path / "killed",
        full,
        "epoch",
        env,
    )


def test_a_checkpoint_of_another_configuration_is_not_resumed(tiny_dataset, prepared, tmp_path, caplog):
    train(tmp_path, tiny_dataset, prepared, epochs=1)
    with caplog.at_level("WARNING"):
        result = train(tmp_path, tiny_dataset, prepared, epochs=1, lr=0.02)
    assert "written by a different configuration" in caplog.text
    assert len(result["history"]) == 1


def _merged_superpixel_shards(shards: list[str], folder: Path) -> list[str]:
    """The same shards (same file names) with every pair of neighbouring region labels merged: other inputs."""
    folder.mkdir()
    merged = []
    for shard in shards:
        store = ShardStore([shard])
        path = folder / Path(shard).name
        save_shard(path, {image_id: store[image_id] // 2 for image_id in store.ids()})
        merged.append(str(path))
    return merged


def test_a_checkpoint_from_other_superpixels_or_weights_is_not_resumed_and_the_run_equals_a_fresh_one(
    tiny_dataset, prepared, tmp_path, caplog
):
    """Same config, other input bytes (the superpixels remade, the weights file replaced at the same path):
    the finished checkpoint must not be resumed; the rerun equals a training from scratch on the new inputs."""
    weights, shards = prepared
    options = icd_options(epochs=2)
    other_shards = _merged_superpixel_shards(shards, tmp_path / "merged")

    def train(out_dir, shards_used, weights_used):
        train_icd(
            tmp_path / out_dir,
            dataset=tiny_dataset,
            superpixel_shards=shards_used,
            weights=weights_used,
            progress=False,
            **options,
        )
        return trained_weights(tmp_path / out_dir / "model.pt")

    old = train("run", shards, weights)
    fresh = train("fresh", other_shards, weights)
    caplog.clear()
    with caplog.at_level("INFO"):
        rerun = train("run", other_shards, weights)
    assert "was trained on other inputs (changed: superpixels); training from scratch" in caplog.text
    assert "resuming" not in caplog.text
    assert differing_weights(rerun, old) and not differing_weights(rerun, fresh)
    assert [r["epoch"] for r in json.loads((tmp_path / "run" / "history.json").read_text())] == [1, 2]

    caplog.clear()
    with caplog.at_level("INFO"):  # the same inputs again: the finished checkpoint is resumed, nothing retrains
        again = train("run", other_shards, weights)
    assert "resuming from" in caplog.text and "after epoch 2" in caplog.text and not differing_weights(again, fresh)

    replaced = tmp_path / "weights.pth"  # one path, two contents
    shutil.copy(weights, replaced)
    old = train("weights_run", shards, replaced)
    state = torch.load(replaced, weights_only=True)
    torch.save({key: value + 0.01 if value.is_floating_point() else value for key, value in state.items()}, replaced)
    fresh = train("weights_fresh", shards, replaced)
    caplog.clear()
    with caplog.at_level("INFO"):
        rerun = train("weights_run", shards, replaced)
    assert "(changed: weights); training from scratch" in caplog.text
    assert differing_weights(rerun, old) and not differing_weights(rerun, fresh)


def test_an_epoch_visits_full_batches_only_and_every_rank_the_same_number_of_images():
    """The official loader drops the last partial batch: 10,582 VOC images at batch 32 give 330 iterations."""
    assert len(epoch_order(10_582, 32, seed=0, epoch=0)) == 330 * 32
    order = epoch_order(26, 8, seed=1, epoch=2)
    assert len(order) == 24 and len(set(order)) == 24 and set(order) <= set(range(26))
    assert order == epoch_order(26, 8, seed=1, epoch=2) and order != epoch_order(26, 8, seed=1, epoch=3)
    shares = [order[rank::2] for rank in range(2)]  # 2 processes, 4 images each per batch
    assert len(shares[0]) == len(shares[1]) == 12
    assert sorted(shares[0][:4] + shares[1][:4]) == sorted(order[:8])  # batch 0 = the first 8 positions
    with pytest.raises(ConfigError, match="icd.batch_size 32 is larger than the 24 training images"):
        train_icd(
            "unused",
            dataset={
                "roles": {"train": "t"},
                "splits": {"t": [str(i) for i in range(24)]},
                "labels": {str(i): [0] for i in range(24)},
                "classes": ["a"],
                "voc_root": "v",
                "sbd_root": "v",
            },
            superpixel_shards=[],
            weights="unused",
            progress=False,
            **icd_options(batch_size=32),
        )


def test_a_diverging_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny_dataset, prepared, tmp_path):
    assert_divergence_keeps_the_checkpoint(
        partial(train, tmp_path, tiny_dataset, prepared, epochs=1), tmp_path / "checkpoint.pt", lr=1e12
    )


def test_score_inference_keeps_present_classes_in_float16_and_feeds_pixel_ap(tiny_dataset, prepared, tmp_path):
    from icd.score_maps import SCORE_MAPS, score_map_average_precision
    from icd.scores import load_trained
    from wsss.core.errors import ConfigError

    shards = prepared[1]
    options, ids, scores_shard = train_and_score(tmp_path, tiny_dataset, prepared)
    store = ShardStore([scores_shard])
    for image_id in ids:
        scores = store[image_id]
        assert scores.dtype == np.float16
        assert scores.shape == (len(SCORE_MAPS), len(tiny_dataset["labels"][image_id]), 9, 9)  # 65 px -> 9
        assert np.isfinite(scores).all()
    every_map = list(SCORE_MAPS)
    table = score_map_average_precision(
        tiny_dataset, {"": {"maps": every_map, "scores": [str(scores_shard)]}}, canvas=65, progress=False
    )
    assert set(table) == set(SCORE_MAPS)
    assert all(0.0 <= row["mAP"] <= 1.0 for row in table.values())

    from wsss.core.shards import save_shard

    rng = np.random.default_rng(0)
    save_shard(tmp_path / "ablation.npz", {i: rng.normal(size=store[i].shape).astype(np.float16) for i in ids})
    ablation_alone = score_map_average_precision(
        tiny_dataset, {"": {"maps": every_map, "scores": [str(tmp_path / "ablation.npz")]}}, canvas=65, progress=False
    )
    networks = {
        "": {"maps": every_map, "scores": [str(scores_shard)]},
        "_no_td": {"maps": ["bottom_up", "refined"], "scores": [str(tmp_path / "ablation.npz")]},
    }
    mixed = score_map_average_precision(tiny_dataset, networks, canvas=65, progress=False)
    # Table 1 with a second network: its rows are added with its suffix, exactly that network's own AP; the
    # unsuffixed rows stay the primary network's.
    assert {name: mixed[f"{name}_no_td"] for name in ("bottom_up", "refined")} == {
        name: ablation_alone[name] for name in ("bottom_up", "refined")
    }
    assert {name: mixed[name] for name in SCORE_MAPS} == table
    assert list(mixed) == [*SCORE_MAPS, "bottom_up_no_td", "refined_no_td"]
    assert mixed["bottom_up_no_td"] != table["bottom_up"]
    with pytest.raises(ConfigError, match="trained with other model/icd settings"):
        load_trained(
            tmp_path / "model.pt", model=options["model"], icd={**options["icd"], "lr": 0.5}, normalisation="minus127"
        )
    with pytest.raises(ConfigError, match="or input normalisation than the current configuration"):
        load_trained(tmp_path / "model.pt", model=options["model"], icd=options["icd"], normalisation="torchvision")

    # seeds.inference_scale 2: the padded canvas enlarged to 2 * 64 + 1 before the network, maps still
    # covering the 65 px canvas -- the same as scale 1 on a canvas the caller enlarged itself.
    from icd.scores import image_scores
    from wsss.data.transforms import bilinear_resize, nearest_resize, pad_to

    net, normalise = load_trained(
        tmp_path / "model.pt", model=options["model"], icd=options["icd"], normalisation="minus127"
    )
    assert normalise.name == "minus127"  # model.pt's record
    image = read_rgb(f"{tiny_dataset['voc_root']}/JPEGImages/{ids[0]}.jpg")
    regions, classes = ShardStore(shards)[ids[0]], tiny_dataset["labels"][ids[0]]
    scaled = image_scores(net, image, regions, classes, canvas=65, inference_scale=2.0, normalise=normalise)
    assert scaled.shape == (len(SCORE_MAPS), len(classes), 17, 17)
    by_hand = image_scores(
        net,
        bilinear_resize(pad_to(image, 65, 65, np.uint8(127)), 129, 129),
        nearest_resize(pad_to(regions.astype(np.int64), 65, 65, int(regions.max()) + 1), 129, 129),
        classes,
        canvas=129,
        normalise=normalise,
    )
    np.testing.assert_array_equal(scaled, by_hand)

    # The trained backbone as a weights file (deeplab.init_from_icd): it loads strictly, equal to the network's.
    from icd.scores import export_backbone
    from wsss.nets.backbones import load_vgg16_weights
    from wsss.nets.normalisation import weights_normalisation

    export_backbone(
        tmp_path / "model.pt",
        tmp_path / "backbone.pth",
        model=options["model"],
        icd=options["icd"],
        normalisation="minus127",
    )
    assert weights_normalisation(tmp_path / "backbone.pth", key="deeplab.normalisation.vgg16").name == "minus127"
    exported = VGG16DeepLab(width=options["model"]["width"], batch_norm=True)
    load_vgg16_weights(exported, tmp_path / "backbone.pth")
    for name, tensor in net.backbone.state_dict().items():
        assert torch.equal(exported.state_dict()[name], tensor), name


def test_distributed_training_with_two_processes(tiny_dataset, prepared, tmp_path):
    """torchrun with 2 CPU processes (gloo): the DDP path trains and rank 0 writes the outputs."""
    weights, shards = prepared
    dataset_file = tmp_path / "dataset.json"
    dataset_file.write_text(json.dumps(tiny_dataset))
    result = run_under_torchrun(
        _train_command(dataset_file, shards, weights, tmp_path / "out", icd_options(epochs=1)), port=29517
    )
    assert result.returncode == 0, result.stderr[-3000:]
    history = json.loads((tmp_path / "out" / "history.json").read_text())
    assert len(history) == 1 and np.isfinite(history[0]["loss_total"])
    assert "model" in torch.load(tmp_path / "out" / "model.pt", weights_only=True)


def test_seed_shards_collect_into_variant_folders_and_are_evaluated(tiny_dataset, prepared, tmp_path):
    from PIL import Image

    from icd.seed_quality import evaluate_seed_folders, threshold_sweep
    from icd.seeds import collect_seed_shards, generate_seed_shard
    from tests.conftest import snapshot
    from wsss.core.config import load_config
    from wsss.core.errors import DataError
    from wsss.data.io import read_mask

    shards = prepared[1]
    _, ids, scores_shard = train_and_score(tmp_path, tiny_dataset, prepared)
    scores = [str(scores_shard)]
    rows, best = threshold_sweep(
        tiny_dataset, scores, shards, canvas=65, thresholds=[0.0, 0.3], cam_backgrounds=[0.2, 0.4], progress=False
    )
    assert {(r["table"], r["variant"], r["threshold"]) for r in rows} == {
        (2, "cam", 0.0),
        (2, "cam", 0.3),
        (2, "icd", 0.0),
        (2, "icd", 0.3),
        ("cam sweep", "cam", 0.2),
        ("cam sweep", "cam", 0.4),
        ("cam sweep", "cam_sp", 0.2),
        ("cam sweep", "cam_sp", 0.4),
    }
    for variant in ("cam", "cam_sp"):  # each baseline's own best threshold against the ground truth
        sweep = {r["threshold"]: r["miou"] for r in rows if r["table"] == "cam sweep" and r["variant"] == variant}
        assert best[variant] == max(sweep, key=sweep.get)
    seed_shard = partial(  # a shard of seeds of the training images at the baselines' best thresholds
        generate_seed_shard,
        dataset=tiny_dataset,
        superpixel_shards=shards,
        canvas=65,
        threshold=0.0,
        cam_backgrounds=best,
        saliency_background=0.01,
        crf=load_config()["crf"],
        progress=False,
    )
    parts = []
    for index in range(2):
        parts.append(str(tmp_path / f"seeds_{index}"))
        seed_shard(parts[-1], shard_ids(ids, index, 2), score_shards=scores)
        # another network's shard of the same seed sets: the same PNGs, in suffixed folders
        seed_shard(f"{parts[-1]}_other", shard_ids(ids, index, 2), score_shards=scores, suffix="_other")
    variants = ["cam", "cam_crf", "cam_sp", "icd_bottom_up", "icd_refined", "icd", "icd_crf", "icd_sal"]
    collect_seed_shards(parts, tmp_path / "seeds", variants)
    for index, part in enumerate(parts):
        other = {path.relative_to(f"{part}_other").as_posix() for path in Path(f"{part}_other").rglob("*.png")}
        assert other == {
            f"{variant}_other/{image_id}.png" for variant in variants for image_id in shard_ids(ids, index, 2)
        }
        assert all(
            (Path(part) / variant / f"{image_id}.png").read_bytes()
            == (Path(f"{part}_other") / f"{variant}_other" / f"{image_id}.png").read_bytes()
            for variant in variants
            for image_id in shard_ids(ids, index, 2)
        )
    for variant in variants:
        pngs = sorted((tmp_path / "seeds" / variant).glob("*.png"))
        assert [p.stem for p in pngs] == sorted(ids)
        assert read_mask(pngs[0]).shape == image_size(f"{tiny_dataset['voc_root']}/JPEGImages/{pngs[0].stem}.jpg")
    table, per_class = evaluate_seed_folders(
        tiny_dataset, tmp_path / "seeds", dict.fromkeys(variants, 0.0), progress=False
    )
    assert [row["variant"] for row in table] == variants
    assert all(0 <= row["miou_strict"] <= row["miou"] <= 1 and 0 <= row["recall"] <= 1 for row in table)
    # Recall and precision recounted from the written PNGs and the GT (read with PIL, not icd's readers):
    # a seed pixel left at 255 is unlabelled, neither a hit nor a wrong class, and GT 255 counts nowhere.
    from wsss.data.voc import VOCPaths

    paths = VOCPaths.create(tiny_dataset["voc_root"], tiny_dataset["sbd_root"])
    split = tiny_dataset["roles"]["train"]
    truths = [np.asarray(Image.open(paths.ground_truth(split, image_id))) for image_id in ids]
    for row in table:
        seeds = [np.asarray(Image.open(tmp_path / "seeds" / row["variant"] / f"{image_id}.png")) for image_id in ids]
        valid = sum(int((truth != 255).sum()) for truth in truths)
        labelled = sum(int(((seed != 255) & (truth != 255)).sum()) for seed, truth in zip(seeds, truths, strict=True))
        right = sum(int(((seed == truth) & (truth != 255)).sum()) for seed, truth in zip(seeds, truths, strict=True))
        assert row["recall"] == pytest.approx(labelled / valid), row["variant"]
        assert row["precision"] == pytest.approx(right / labelled), row["variant"]
    # The CRF's 0.1 rule leaves pixels at 255 on these seeds, so the recount above sees unlabelled pixels.
    assert table[variants.index("icd_crf")]["recall"] < 1.0
    assert "background" in per_class["icd"]
    from icd.figures import FIG4_COLUMNS, seed_figure

    seed_figure(tmp_path / "fig4.png", tiny_dataset, scores, tmp_path / "seeds", canvas=65, count=3)
    with Image.open(tmp_path / "fig4.png") as figure:
        assert figure.size == (200 * len(FIG4_COLUMNS), 600)
        assert np.asarray(figure.convert("L")).std() > 10  # not blank

    # Bad input: a seed folder of another dataset, a saliency map of the wrong size; nothing written is lost.
    before = snapshot(tmp_path / "seeds")
    (tmp_path / "seeds" / "icd" / f"{ids[0]}.png").unlink()
    with pytest.raises(DataError, match=rf"seeds/icd: no seed for 1 of the {len(ids)} 'train_aug' ids"):
        evaluate_seed_folders(tiny_dataset, tmp_path / "seeds", {"icd": 0.0}, progress=False)
    saliency = Path(tiny_dataset["saliency_root"]) / f"{ids[0]}.png"
    original = saliency.read_bytes()
    try:
        Image.open(saliency).resize((7, 5)).save(saliency)
        with pytest.raises(DataError, match=rf"{ids[0]}.png: saliency map is 7x5 but its image is"):
            seed_shard(parts[0], shard_ids(ids, 0, 2), score_shards=scores)
    finally:
        saliency.write_bytes(original)
    missing = tmp_path / "scores_missing.npz"
    with pytest.raises(DataError, match=rf"{missing}: unreadable shard .*rerun the step that writes it"):
        seed_shard(parts[0], shard_ids(ids, 0, 2), score_shards=[missing])
    assert (tmp_path / "seeds_0" / "icd").is_dir() and len(snapshot(tmp_path / "seeds")) == len(before) - 1


def test_extra_images_join_the_epochs_only_where_a_network_asks(tiny_dataset, prepared, tmp_path, monkeypatch):
    """data.extra's images are trained on beside the split (an epoch visits both, with their superpixels); with
    icd.extra_images false the network is bit for bit the one trained on a dataset without them."""
    import icd.train
    from icd.cli import main as icd_cli
    from wsss.data.classes import VOC
    from wsss.data.extra import ExtraImages, ExtraSet, validate_extra
    from wsss.data.training_images import TrainingImages

    weights, _ = prepared
    split = tiny_dataset["splits"]["train_aug"]
    root = tmp_path / "web"
    (root / "images").mkdir(parents=True)
    lines = []
    for number, image_id in enumerate(split[:8]):  # real images under new names, with their labels as names
        shutil.copy(Path(tiny_dataset["voc_root"]) / "JPEGImages" / f"{image_id}.jpg", root / f"images/web{number}.jpg")
        names = ",".join(VOC.names[label] for label in tiny_dataset["labels"][image_id])
        lines.append(f"images/web{number}.jpg {names}")
    (root / "extra_list.txt").write_text("\n".join(lines) + "\n")
    with_extra = {**tiny_dataset, "extra": validate_extra([ExtraSet(root)], VOC, progress=False)}
    extra = ExtraImages.of_dataset(with_extra)
    assert len(extra) == 8 and TrainingImages.of_dataset(with_extra).ids == (*split, *extra.ids)
    # The superpixels verb shards the training images, the extra ones included (ICD's refinement reads them).
    dataset_file, training_shard = tmp_path / "dataset.json", tmp_path / "training_shard.npz"
    dataset_file.write_text(json.dumps(with_extra))
    options = {k: v for k, v in load_config()["superpixels"].items() if k != "shards"}
    options.update(width=WIDTH, batch_norm=True, normalisation="minus127", feature_input_size=65, max_regions=8)
    arguments = [
        "superpixels",
        "--dataset",
        str(dataset_file),
        "--shard",
        "0",
        "--shards",
        "1",
        "--weights",
        str(weights),
    ]
    assert icd_cli([*arguments, "--options", json.dumps(options), "--gpus", "0", "--out", str(training_shard)]) == 0
    store = ShardStore([training_shard])
    assert store.ids() == sorted([*split, *extra.ids])
    assert all(store[i].shape == image_size(extra.path(i)) for i in extra.ids)

    visited: list[str] = []
    original = icd.train.ICDTrainingSet.__getitem__

    def recording(self, index):
        visited.append(self.ids[index])
        return original(self, index)

    monkeypatch.setattr(icd.train.ICDTrainingSet, "__getitem__", recording)

    def run(folder, dataset, **overrides):
        visited.clear()
        train_icd(
            folder,
            dataset=dataset,
            superpixel_shards=[str(training_shard)],
            weights=weights,
            progress=False,
            **icd_options(epochs=1, **overrides),
        )
        return sorted(visited), trained_weights(folder / "model.pt")

    ids, _ = run(tmp_path / "with", with_extra)
    assert ids == sorted([*split, *extra.ids])  # 32 images: four full batches of 8
    ids, left_out = run(tmp_path / "left_out", with_extra, extra_images=False)
    assert ids == sorted(split)
    _, without = run(tmp_path / "without", tiny_dataset, extra_images=False)
    assert differing_weights(left_out, without) == []

    # A changed extra label is a changed input: a checkpoint of the old set is not resumed.
    relabelled = json.loads(json.dumps(with_extra))
    first = extra.ids[0]
    relabelled["extra"]["labels"][first] = [label % 20 + 1 for label in relabelled["extra"]["labels"][first]]
    assert icd.train.extra_images_digest(TrainingImages.of_dataset(relabelled)) != icd.train.extra_images_digest(
        TrainingImages.of_dataset(with_extra)
    )


def test_derived_epochs_keep_the_official_iterations_when_extra_images_join():
    from icd.train import OFFICIAL_EPOCHS, training_epochs

    assert training_epochs(7, 600, 800) == 7  # set: passes over everything the network trains on
    assert training_epochs(None, 600, 600) == OFFICIAL_EPOCHS == 20
    assert training_epochs(None, 600, 800) == 15  # the synthetic default: 15 x 800 = 20 x 600 images
    assert training_epochs(None, 10, 10_000) == 1
