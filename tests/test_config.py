"""Config validation: defaults, synthetic overrides, and rejection of bad configs with the key named."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from tests.workflow_helpers import TINY, snakemake_command
from wsss.core.config import PROJECT_ROOT, load_config
from wsss.core.errors import ConfigError
from wsss.data.canvas import derived_canvas

VOC = {"run": "voc", "data": {"source": "voc", "voc_root": "/data/VOC2012"}, "pretrain": {"weights": "/w/vgg16.pth"}}


def test_default_config_is_synthetic_and_cpu_sized():
    config = load_config()
    assert config["data"]["source"] == "synthetic"
    assert config["model"]["width"] == 0.125  # from synthetic_overrides
    assert config["icd"]["lr"] == 0.003 and config["icd"]["epochs"] == 20  # a synthetic preset; a schema default
    assert config["superpixels"] == {
        **config["superpixels"],
        "sigma": 0.8,
        "scale": 75,
        "min_size": 75,
        "max_regions": 16,
    }
    assert config["crf"]["bilateral_srgb"] == 13 and config["seeds"]["saliency_background"] == 0.01


def test_voc_config_uses_the_paper_settings_not_the_synthetic_overrides(tmp_path):
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(VOC))
    config = load_config(PROJECT_ROOT / "config.yaml", path)
    assert config["model"]["width"] == 1.0 and config["icd"]["crop_size"] == 321 and config["icd"]["batch_size"] == 32
    assert config["superpixels"]["max_regions"] == 64 and config["seeds"]["inference_size"] is None  # from the data
    assert derived_canvas(500) == 513  # VOC's largest side gives the official canvas
    assert config["icd"]["lr"] == 0.001
    assert config["data"]["sbd_root"] == "/data/VOC2012"  # defaults to voc_root


BAD = {
    "unknown top key": (
        {"seeds_threshold": 0.3},
        "at '<top level>': Additional properties are not allowed ('seeds_threshold'",
    ),
    "typo in section": ({"seeds": {"treshold": 0.3}}, "at 'seeds': Additional properties are not allowed ('treshold'"),
    "wrong type": ({"icd": {"epochs": "twenty"}}, "at 'icd.epochs': 'twenty' is not of type 'integer', 'null'"),
    "out of range": ({"crf": {"confidence": 1.5}}, "at 'crf.confidence': 1.5 is greater than the maximum of 1"),
    "bad enum": ({"icd": {"bottom_up_loss": "l3"}}, "at 'icd.bottom_up_loss': 'l3' is not one of ['l2', 'abs', 'sig']"),
    "bad source": ({"data": {"source": "ade"}}, "at 'data.source': 'ade' is not one of ['synthetic', 'voc', 'coco']"),
    "coco without root": ({"data": {"source": "coco"}}, "at 'data': 'coco_root' is a required property"),
    "bad run name": ({"run": "../escape"}, "at 'run': '../escape' does not match"),
    "voc without root": ({"data": {"source": "voc"}}, "at 'data': 'voc_root' is a required property"),
    "typo in overrides": (
        {"synthetic_overrides": {"icd": {"epoch": 3}}},
        "at 'icd': Additional properties are not allowed ('epoch'",
    ),
    "stray context class": (
        {"synthetic": {"context_classes": ["dog"]}},
        "at 'synthetic.context_classes': ['dog'] not in synthetic.classes",
    ),
    "inverted range": ({"synthetic": {"min_size": 200}}, "min_size/max_size must be [low, high] pairs"),
    "unknown class": (
        {"synthetic": {"classes": ["cat", "unicorn"]}},
        "at 'synthetic.classes.1': 'unicorn' is not one of",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_config_is_rejected_with_the_key_named(name):
    override, expected = BAD[name]
    with pytest.raises(ConfigError) as info:
        load_config(overrides=override)
    assert expected in str(info.value)


def test_explicit_settings_win_over_the_synthetic_presets():
    config = load_config(overrides={"icd": {"lr": 0.05}, "model": {"backbone": "vgg16"}})
    assert config["icd"]["lr"] == 0.05 and config["model"]["backbone"] == "vgg16"
    assert config["icd"]["crop_size"] == 160 and config["model"]["width"] == 0.125  # presets still fill the rest


def test_voc_requires_imagenet_weights():
    with pytest.raises(ConfigError, match="pretrain.weights is not set"):
        load_config(overrides={**VOC, "pretrain": {"weights": None}})


def test_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="list.yaml: a config file must hold a mapping"):
        load_config(tmp_path / "list.yaml")


def test_snakemake_rejects_a_bad_config_before_running_anything(tmp_path):
    """A real run (no -n) in an empty working directory: the config error must stop Snakemake while it
    reads the Snakefile, so nothing but Snakemake's own log is written there (no results/, no job
    metadata or locks). The tiny synthetic sizes bound the cost if a job did start."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"run": "tiny", "synthetic": TINY["synthetic"], "seeds": {"treshold": 0.3}}))
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        snakemake_command(workdir, bad, "--cores", "1", "--", "synthesize_data"), capture_output=True, text=True
    )
    assert result.returncode != 0
    assert (
        "invalid configuration at 'seeds': Additional properties are not allowed ('treshold'"
        in result.stdout + result.stderr
    )
    written = {path.relative_to(workdir).as_posix() for path in workdir.rglob("*")}
    assert {path for path in written if not path.startswith(".snakemake/log/")} <= {".snakemake", ".snakemake/log"}


def test_defaults_are_copies_so_one_config_cannot_change_another():
    """The schema is parsed once per process; a default a config holds must never be the schema's own object."""
    first = load_config()
    first["synthetic"]["classes"].append("dog")
    first["deeplab"]["backbones"].clear()
    second = load_config()
    assert "dog" not in second["synthetic"]["classes"] and second["deeplab"]["backbones"] == ["vgg16", "resnet101"]


def test_deeplab_seeds_follow_the_data_unless_set():
    """Without saliency maps the default seed sets drop icd_sal (which nothing could make) instead of stopping the
    run at parse time; with them, or when the user lists seed sets, nothing is derived."""
    assert load_config(overrides=VOC)["deeplab"]["seeds"] == ["icd_crf"]
    with_saliency = {**VOC, "data": {**VOC["data"], "saliency_root": "/data/saliency"}}
    assert load_config(overrides=with_saliency)["deeplab"]["seeds"] == ["icd_crf", "icd_sal"]
    assert load_config()["deeplab"]["seeds"] == ["icd_crf", "icd_sal"]  # the synthetic set has saliency maps
    assert load_config(overrides={"synthetic": {"saliency": False}})["deeplab"]["seeds"] == ["icd_crf"]
    chosen = {**VOC, "deeplab": {"seeds": ["cam", "icd_crf"]}}
    assert load_config(overrides=chosen)["deeplab"]["seeds"] == ["cam", "icd_crf"]
    config = load_config(overrides=VOC)
    assert load_config(overrides=config)["deeplab"]["seeds"] == ["icd_crf"]  # validating again changes nothing


def test_the_cpu_preset_is_offered_by_name_for_any_source():
    """`preset: cpu` gives real data the synthetic default's CPU-sized settings without copying keys (explicit keys
    still win); real data defaults to the paper's settings, and `preset: paper` gives them to synthetic data too."""
    cpu = load_config(PROJECT_ROOT / "config.yaml", overrides={**VOC, "preset": "cpu", "icd": {"crop_size": 128}})
    synthetic = load_config()
    assert cpu["preset"] == synthetic["preset"] == "cpu"
    assert cpu["model"] == synthetic["model"] and cpu["deeplab"]["init_from_icd"] is True
    assert cpu["icd"] == {**synthetic["icd"], "crop_size": 128}
    paper = load_config(PROJECT_ROOT / "config.yaml", overrides=VOC)
    assert paper["preset"] == "paper" and paper["model"]["width"] == 1.0 and paper["icd"]["crop_size"] == 321
    full_size = load_config(overrides={"preset": "paper"})
    assert full_size["model"]["width"] == 1.0 and full_size["data"]["source"] == "synthetic"
    with pytest.raises(ConfigError, match="at 'preset'"):
        load_config(overrides={"preset": "gpu"})
