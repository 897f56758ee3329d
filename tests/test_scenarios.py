"""The tests' scenario files (tests/scenarios): valid configs, read afresh at every call, the VOC one tiny-sized."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios import scenario, scenario_names, slurm_conf, voc_scenario
from wsss.core.config import load_config


def test_the_scenarios_are_there():
    assert {"tiny", "voc", "synthetic_small"} <= set(scenario_names())


@pytest.mark.parametrize("name", scenario_names())
def test_every_scenario_is_a_valid_config_with_a_header_saying_what_it_is_for(name):
    config = load_config(overrides=scenario(name))
    assert config["run"] == scenario(name).get("run", "synthetic")
    assert (Path(__file__).parent / "scenarios" / f"{name}.yaml").read_text().startswith("# ")


def test_each_call_reads_a_new_copy():
    first = scenario("tiny")
    first["synthetic_overrides"]["deeplab"]["seeds"].append("cam")
    assert scenario("tiny")["synthetic_overrides"]["deeplab"]["seeds"] == ["icd_crf"]


def test_the_voc_scenario_runs_on_the_tiny_sizes_with_every_path_filled_in(tmp_path):
    tiny_sizes = scenario("tiny")["synthetic_overrides"]
    config = voc_scenario(tmp_path / "VOC 2012", tmp_path / "vgg16.pth", run="voc-other")
    assert {section: config[section] for section in tiny_sizes} == tiny_sizes
    assert config["run"] == "voc-other" and config["data"] == {
        "source": "voc",
        "voc_root": str(tmp_path / "VOC 2012"),
        "saliency_root": str(tmp_path / "VOC 2012" / "Saliency"),
    }
    assert config["pretrain"] == {"weights": str(tmp_path / "vgg16.pth")}
    assert "<" not in repr(config)  # no placeholder left
    settings = load_config(overrides=config)
    assert settings["model"]["width"] == 0.0625 and settings["icd"]["crop_size"] == 48  # not the paper's sizes


def test_the_slurm_config_takes_every_placeholder():
    values = dict(
        host="h",
        controller_port=1,
        node_port=2,
        munge_socket="/m/s",
        root="/r",
        slurmctld_pid="/r/c.pid",
        slurmd_pid="/r/d.pid",
        node="n",
        cpus=4,
        memory_mb=1000,
        partition="p",
    )
    text = slurm_conf(**values)
    assert "$" not in text and "NodeName=n NodeHostname=h NodeAddr=127.0.0.1 CPUs=4 RealMemory=1000" in text
    with pytest.raises(KeyError):
        slurm_conf(**{key: value for key, value in values.items() if key != "cpus"})
