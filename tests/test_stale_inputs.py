"""A rerun never resumes a checkpoint made from other inputs (issue 21), through Snakemake on the TINY run.

Snakemake reruns a trainer when its inputs are newer; the trainer's `checkpoint.pt` of the finished
run sits beside the output. Same config, other input bytes (new seeds after a threshold change, new
superpixels, a weights file replaced at the same path): the model must equal a training from scratch
on the new inputs, never the old model resumed past its last step.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import torch

from tests.workflow_helpers import TINY, differing_weights, snakemake, trained_weights

RUN = "results/tiny"
ICD_NETWORKS = ("networks/icd", "networks/no_td")


def run(workdir: Path, config: dict, *targets: str) -> None:
    result = snakemake(workdir, "--cores", "2", *targets, config=config)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


def copy_run(source: Path, destination: Path) -> Path:
    """A copy of a workdir with its mtimes (copytree's copy2), so Snakemake sees what it saw there."""
    shutil.copytree(source, destination)
    return destination


def from_scratch(workdir: Path, destination: Path, config: dict, folders: list[str], targets: list[str]) -> Path:
    """The same workdir with the trainers' folders (checkpoints included) deleted and the targets rebuilt."""
    copy_run(workdir, destination)
    for folder in folders:
        shutil.rmtree(destination / folder)
    run(destination, config, *targets)
    return destination


@pytest.mark.slow
def test_a_seed_threshold_change_retrains_deeplab_from_scratch_on_the_new_seeds(finished_run, tmp_path):
    workdir = copy_run(finished_run, tmp_path / "run")
    trained = {backbone: f"{RUN}/deeplab/{backbone}/icd_crf" for backbone in ("vgg16", "resnet101")}
    ground_truth = [f"{RUN}/deeplab/{backbone}/gt/model.pt" for backbone in ("vgg16", "resnet101")]
    before = {backbone: trained_weights(workdir / folder / "model.pt") for backbone, folder in trained.items()}
    untouched = {path: (workdir / path).read_bytes() for path in ground_truth}
    seeds_before = {path.name: path.read_bytes() for path in (workdir / RUN / "seeds" / "icd_crf").iterdir()}
    config = {**TINY, "seeds": {"threshold": 0.2}}

    run(workdir, config)
    seeds_after = {path.name: path.read_bytes() for path in (workdir / RUN / "seeds" / "icd_crf").iterdir()}
    assert seeds_after.keys() == seeds_before.keys() and seeds_after != seeds_before  # the threshold reached them
    reference = from_scratch(
        workdir,
        tmp_path / "scratch",
        config,
        list(trained.values()),
        [f"{folder}/model.pt" for folder in trained.values()],
    )
    for backbone, folder in trained.items():
        log = (workdir / RUN / "logs" / "deeplab" / f"train_{backbone}_icd_crf.log").read_text()
        assert "checkpoint.pt was trained on other inputs (changed: labels); training from scratch" in log
        assert "resuming" not in log
        after = trained_weights(workdir / folder / "model.pt")
        assert differing_weights(after, before[backbone]), backbone
        assert not differing_weights(after, trained_weights(reference / folder / "model.pt")), backbone
    # Ground truth cannot change with a seed threshold: those networks are not retrained at all.
    assert {path: (workdir / path).read_bytes() for path in ground_truth} == untouched
    assert not (workdir / RUN / "logs" / "deeplab" / "train_vgg16_gt.log").read_text().count("other inputs")


@pytest.mark.slow
def test_a_superpixel_change_retrains_both_icd_networks_from_scratch(finished_run, tmp_path):
    workdir = copy_run(finished_run, tmp_path / "run")
    before = {name: trained_weights(workdir / RUN / name / "model.pt") for name in ICD_NETWORKS}
    config = copy.deepcopy(TINY)
    config["synthetic_overrides"]["superpixels"]["max_regions"] = 4
    targets = [f"{RUN}/{name}/model.pt" for name in ICD_NETWORKS]

    run(workdir, config, *targets)
    reference = from_scratch(workdir, tmp_path / "scratch", config, [f"{RUN}/{name}" for name in ICD_NETWORKS], targets)
    for name, log_name in zip(ICD_NETWORKS, ("train_icd/icd", "train_icd/no_td"), strict=True):
        log = (workdir / RUN / "logs" / f"{log_name}.log").read_text()
        assert "checkpoint.pt was trained on other inputs (changed: superpixels); training from scratch" in log
        after = trained_weights(workdir / RUN / name / "model.pt")
        assert not differing_weights(after, trained_weights(reference / RUN / name / "model.pt")), name
    # Superpixels shape only the top-down target: the ablation network (no top-down) may come out the same.
    assert differing_weights(trained_weights(workdir / RUN / "networks" / "icd" / "model.pt"), before["networks/icd"])


@pytest.mark.slow
def test_a_weights_file_replaced_at_the_same_path_retrains_icd_from_scratch(finished_run, tmp_path):
    workdir = copy_run(finished_run, tmp_path / "run")
    user_weights = workdir / "imagenet.pth"
    shutil.copy(workdir / RUN / "pretrain" / "backbone.pth", user_weights)
    # The replacement below is a plain DeepLab-layout file that records no normalisation: the config states it.
    config = {**TINY, "pretrain": {**TINY["pretrain"], "weights": str(user_weights), "normalisation": "minus127"}}
    target = f"{RUN}/networks/icd/model.pt"
    run(workdir, config, target)
    before = trained_weights(workdir / target)

    state = torch.load(user_weights, weights_only=True)  # the user downloads other weights to the same path
    torch.save(
        {key: value * 1.05 if value.is_floating_point() else value for key, value in state.items()}, user_weights
    )
    run(workdir, config, target)
    log = (workdir / RUN / "logs" / "train_icd" / "icd.log").read_text()
    assert "checkpoint.pt was trained on other inputs (changed: " in log and "weights); training from scratch" in log
    after = trained_weights(workdir / target)
    assert differing_weights(after, before)
    reference = from_scratch(workdir, tmp_path / "scratch", config, [f"{RUN}/networks/icd"], [target])
    assert not differing_weights(after, trained_weights(reference / target))
