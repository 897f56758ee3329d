"""The tests' scenarios, one file each in this folder: what a test runs, written as the config a user would write.

`scenario(name)` reads `<name>.yaml` afresh at every call, so a test may change its copy freely. The paths a
scenario cannot know (where a test put its data) are filled in here, in Python: `voc_scenario`.
"""

from __future__ import annotations

from pathlib import Path
from string import Template

import yaml

SCENARIOS = Path(__file__).resolve().parent


def scenario_names() -> list[str]:
    """Every YAML scenario here, by name."""
    return sorted(path.stem for path in SCENARIOS.glob("*.yaml"))


def scenario(name: str) -> dict:
    """The config `<name>.yaml` holds, a new dict at every call."""
    return yaml.safe_load((SCENARIOS / f"{name}.yaml").read_text())


def voc_scenario(voc_root: Path, weights: Path, run: str = "voc") -> dict:
    """voc.yaml, a data.source voc run on the tiny sizes, reading the VOC tree at `voc_root` (its saliency maps in
    `voc_root`/Saliency) and the ImageNet-style VGG16 weights file `weights`."""
    config = scenario("voc")
    config["run"] = run
    config["data"].update(voc_root=str(voc_root), saliency_root=str(voc_root / "Saliency"))
    config["pretrain"]["weights"] = str(weights)
    return config


def slurm_conf(**values: object) -> str:
    """slurm.conf, the test cluster's configuration, with its placeholders filled in (all of them, or KeyError)."""
    return Template((SCENARIOS / "slurm.conf").read_text()).substitute(values)
