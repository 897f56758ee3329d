"""The workflow's planning as Python (wsss.workflow, icd.workflow, deeplab.workflow): what each step is given, and
which steps a setting reaches, on validated configs, without running Snakemake."""

from __future__ import annotations

import copy
import json

import pytest

import deeplab.workflow as deeplab_plan
import icd.workflow as icd_plan
from icd.seed_sets import seed_variants
from wsss.core.config import load_config
from wsss.core.errors import ConfigError
from wsss.workflow import as_json, checked_dataset, data_targets, dataset_check, dataset_roots, has_saliency

VOC = {
    "run": "voc",
    "data": {"source": "voc", "voc_root": "/data/VOC2012", "saliency_root": None},
    "pretrain": {"weights": "/weights/vgg16.pth"},
    "deeplab": {"weights": {"resnet101": "/weights/resnet101.pth"}},
}


@pytest.fixture(scope="module")
def synthetic():
    return load_config()


@pytest.fixture(scope="module")
def with_ood():
    """The default with the W-OoD network, which the cpu preset leaves out (config.yaml) and OoD data brings."""
    return load_config(overrides={"networks": {"ood": {}}})


def with_setting(config: dict, section: str, key: str, value) -> dict:
    changed = copy.deepcopy(config)
    changed[section][key] = value
    return changed


def test_params_are_canonical_json():
    assert as_json({"b": 1, "a": {"d": 2, "c": 3}}) == '{"a": {"c": 3, "d": 2}, "b": 1}'


def test_synthetic_data_is_generated_under_the_run_and_real_data_read_where_it_is(synthetic):
    root = f"results/{synthetic['run']}/data/VOC2012"
    assert dataset_roots(synthetic) == (root, root, f"{root}/Saliency") and has_saliency(synthetic)
    assert data_targets(synthetic) == [
        f"results/{synthetic['run']}/data/dataset.json",
        f"results/{synthetic['run']}/data/synthetic_stats.json",
    ]
    voc = load_config(overrides=VOC)
    assert dataset_roots(voc) == ("/data/VOC2012", "/data/VOC2012", None) and not has_saliency(voc)
    assert data_targets(voc) == ["results/voc/data/dataset.json"]


def test_the_checked_report_is_named_after_every_setting_of_the_check():
    voc = load_config(overrides=VOC)
    check = dataset_check(voc, {"width": 1.0, "batch_norm": False})
    assert check["roots"] == ["/data/VOC2012", "/data/VOC2012", ""]
    assert check["weights"] == '--weights /weights/vgg16.pth --backbone \'{"batch_norm": false, "width": 1.0}\''
    names = {
        checked_dataset(voc, check),
        checked_dataset(voc, dataset_check(voc, {"width": 1.0, "batch_norm": True})),
        checked_dataset(voc, dataset_check(with_setting(voc, "data", "train_split", "train"), {})),
    }
    assert len(names) == 3 and all(name.startswith("results/voc/data/checked/") for name in names)


def test_weights_come_from_the_user_or_the_synthetic_stand_ins(synthetic):
    voc = load_config(overrides=VOC)
    assert icd_plan.backbone_weights(voc) == "/weights/vgg16.pth"
    assert icd_plan.backbone_weights(synthetic) == f"results/{synthetic['run']}/pretrain/backbone.pth"
    assert icd_plan.stage_targets(voc, "pretrain") == []
    assert deeplab_plan.resnet101_stand_in(synthetic["deeplab"], synthetic=True)
    assert not deeplab_plan.resnet101_stand_in(voc["deeplab"], synthetic=False)


def test_every_icd_step_gets_the_backbone_it_runs(synthetic):
    backbone = icd_plan.backbone_options(synthetic, "caffe")
    assert backbone == {
        "width": synthetic["model"]["width"],
        "batch_norm": synthetic["model"]["backbone"] == "vgg16_bn",
        "normalisation": "caffe",
    }
    assert icd_plan.pretrain_options(synthetic, "caffe").items() >= backbone.items()
    assert "weights" not in icd_plan.pretrain_options(synthetic, "caffe")
    assert icd_plan.superpixel_options(synthetic, "caffe").items() >= backbone.items()
    assert "shards" not in icd_plan.superpixel_options(synthetic, "caffe")
    full = icd_plan.training_options(synthetic, "icd", "caffe")
    ablation = icd_plan.training_options(synthetic, "no_td", "caffe")
    assert full["icd"]["top_down"] and not ablation["icd"]["top_down"]
    assert {**ablation["icd"], "top_down": True} == full["icd"] == synthetic["icd"]
    assert synthetic["icd"]["top_down"], "the ablation network must not change the config it reads"


def test_the_ablation_network_exists_only_beside_a_top_down_network(synthetic, with_ood):
    root = f"results/{synthetic['run']}"
    assert list(icd_plan.networks(synthetic)) == ["icd", "no_td"]  # the cpu preset leaves the W-OoD network out
    assert list(icd_plan.networks(with_ood)) == ["icd", "no_td", "ood"]  # built in where there are OoD images
    without_ood_data = {**with_ood, "synthetic": {**with_ood["synthetic"], "num_ood": 0}}
    with pytest.raises(ConfigError, match=r"networks.ood trains with out-of-distribution images .* has none"):
        icd_plan.networks(without_ood_data)
    assert icd_plan.score_shards(synthetic, "no_td") == [
        f"{root}/networks/no_td/scores/shard_{shard}.npz" for shard in range(synthetic["seeds"]["shards"])
    ]
    assert f"{root}/networks/no_td/model.pt" in icd_plan.stage_targets(synthetic, "icd")
    switched_off = {**synthetic, "networks": {**synthetic["networks"], "no_td": None}}
    without_top_down = with_setting(synthetic, "icd", "top_down", False)
    for config in (switched_off, without_top_down):
        assert list(icd_plan.networks(config)) == ["icd"]
        assert f"{root}/networks/no_td/model.pt" not in icd_plan.stage_targets(config, "icd")
        assert not any(variant.endswith("_no_td") for variant in icd_plan.variants(config))


def test_the_seed_families_write_every_seed_set_once(synthetic):
    family_of = icd_plan.family_of(synthetic)
    assert sorted(family_of) == sorted(icd_plan.variants(synthetic))
    assert icd_plan.variants(synthetic) == seed_variants(icd_plan.networks(synthetic))
    assert icd_plan.family_shards(synthetic, "cam") == [
        f"results/{synthetic['run']}/seeds/shards/cam/shard_{shard}" for shard in range(synthetic["seeds"]["shards"])
    ]


def test_only_networks_with_cam_seed_sets_are_swept_and_table_1_reports_the_maps_their_seeds_use(synthetic):
    config = {
        **synthetic,
        "networks": {**synthetic["networks"], "wide": {"icd": {"lr": 0.5}, "seeds": ["cam_sp", "icd"]}},
    }
    assert icd_plan.swept_networks(config) == ["icd", "wide"]
    assert icd_plan.cam_background(config, "wide") == f"results/{config['run']}/networks/wide/cam_background.json"
    table_1 = icd_plan.score_map_ap_networks(config)
    assert list(table_1) == ["", "_no_td", "_wide"]
    assert table_1[""]["maps"] == ["cam", "bottom_up", "refined", "adapted"]
    assert table_1["_no_td"]["maps"] == ["bottom_up", "refined"] and table_1["_wide"]["maps"] == ["cam", "adapted"]
    assert table_1["_wide"]["scores"] == icd_plan.score_shards(config, "wide")


# setting -> the families whose job it reruns (every other family's options stay the same)
SETTING_READERS = {
    ("seeds", "threshold", 0.2): {"icd", "icd_no_td", "icd_crf", "icd_sal", "icd_ood", "icd_crf_ood"},
    ("seeds", "saliency_background", 0.05): {"icd_sal"},
    ("crf", "min_probability", 0.9): {"cam_crf", "icd_crf", "icd_crf_ood"},
    ("seeds", "inference_size", 257): {"cam", "cam_crf", "icd", "icd_no_td", "icd_crf", "icd_sal"}
    | {"cam_ood", "icd_ood", "icd_crf_ood"},
}


@pytest.mark.parametrize("setting", list(SETTING_READERS), ids=lambda setting: f"{setting[0]}.{setting[1]}")
def test_a_seed_setting_changes_the_options_of_exactly_the_families_that_read_it(with_ood, setting):
    changed = with_setting(with_ood, *setting)
    rerun = {
        family
        for family in icd_plan.families(with_ood)
        if as_json(icd_plan.family_options(changed, family)) != as_json(icd_plan.family_options(with_ood, family))
    }
    assert rerun == SETTING_READERS[setting]


def test_a_family_is_given_only_the_settings_its_seeds_read(synthetic):
    options = {family: icd_plan.family_options(synthetic, family) for family in icd_plan.families(synthetic)}
    canvas = synthetic["seeds"]["inference_size"]
    assert options["cam"] == {"canvas": canvas}
    assert options["icd_sal"] == {
        "canvas": canvas,
        "threshold": synthetic["seeds"]["threshold"],
        "saliency_background": synthetic["seeds"]["saliency_background"],
    }
    assert options["icd_crf"]["crf"] == synthetic["crf"] and "crf" not in options["icd"]
    # what generate_seed_shard takes as keywords
    assert all(json.loads(as_json(value)) == value for value in options.values())


def test_vgg16_fc6_keeps_the_dilation_its_weights_were_trained_at(synthetic):
    """ImageNet's fc6 runs at LargeFOV's 12; the fc6 this pipeline trains (the ICD backbone, the pretext stand-in) is a
    3x3 at dilation 1 and keeps it; an explicit deeplab.fc6_dilation wins."""
    assert deeplab_plan.vgg16_fc6_dilation(synthetic) == 1  # init_from_icd
    voc = load_config(overrides=VOC)
    assert deeplab_plan.vgg16_fc6_dilation(voc) == 12  # from pretrain.weights, ImageNet's
    icd_backbone = {**VOC, "deeplab": {"init_from_icd": True}}
    assert deeplab_plan.vgg16_fc6_dilation(load_config(overrides=icd_backbone)) == 1
    imagenet = {**icd_backbone, "deeplab": {"init_from_icd": True, "weights": {"vgg16": "/weights/vgg16.pth"}}}
    assert deeplab_plan.vgg16_fc6_dilation(load_config(overrides=imagenet)) == 12
    stand_in = load_config(overrides={"deeplab": {"init_from_icd": False}})
    assert deeplab_plan.vgg16_fc6_dilation(stand_in) == 1
    assert deeplab_plan.vgg16_fc6_dilation(load_config(overrides={"deeplab": {"fc6_dilation": 4}})) == 4
