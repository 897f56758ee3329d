"""What the Snakemake rules of the DeepLab stage need from the config (kept out of the .smk files)."""

from __future__ import annotations

import re
from typing import NamedTuple

from wsss.core.errors import ConfigError

GROUND_TRUTH = "gt"
# Keys the training step does not read: test-time settings, the list of runs (the rounds among them: a further
# round trains with the same options, on other labels), and the weights and their normalisation (the step gets the
# file and the resolved normalisation apart).
TEST_TIME_KEYS = frozenset(
    {"backbones", "seeds", "baselines", "rounds", "round_seeds", "weights", "normalisation"}
    | {"test_scales", "test_flip", "test_crf", "crf"}
)
# A further round's run is named after its seed set and round (`icd_crf_round2`), the name of its folder
# `deeplab/<backbone>/<run>/`; round 1 keeps the seed set's name.
ROUND_SUFFIX = re.compile(r"^(?P<seeds>.+)_round(?P<round>\d+)$")
# The folder of a run holding its predictions of the training split: the next round's training labels.
TRAINING_LABELS = "train_labels"
# VGG16's fc6 (deeplab.model.DeepLabLargeFOV): LargeFOV's dilation for ImageNet's fc6, a 7x7 classifier layer
# DeepLab subsampled to a 3x3 at dilation 12, and the dilation of the fc6 this pipeline trains (ICD's, the pretext
# stand-in's: a 3x3 at dilation 1).
LARGEFOV_DILATION = 12
TRAINED_FC6_DILATION = 1


def seed_sets(deeplab: dict) -> list[str]:
    """The seed sets trained on: deeplab.seeds, then the baselines (cam seeds, ground truth) not already there."""
    return deeplab["seeds"] + [name for name in deeplab["baselines"] if name not in deeplab["seeds"]]


def trainable_again(deeplab: dict) -> list[str]:
    """The seed sets a further round may train on again: deeplab.seeds but the ground truth (a model's predictions
    are no better labels than the ground truth it learned from)."""
    return [name for name in deeplab["seeds"] if name != GROUND_TRUTH]


def round_seed_sets(deeplab: dict) -> list[str]:
    """The seed sets trained again in further rounds: deeplab.round_seeds, by default all it may name."""
    return trainable_again(deeplab) if deeplab["round_seeds"] is None else deeplab["round_seeds"]


def run_name(seeds: str, round_number: int) -> str:
    """The run of `seeds` in round `round_number`: the seed set's own name in round 1, `<seeds>_round<r>` after."""
    return seeds if round_number == 1 else f"{seeds}_round{round_number}"


def parse_run_name(run: str) -> tuple[str, int]:
    """(seed set, round) of a run's name (`run_name`'s inverse): `icd_crf_round2` is round 2 of `icd_crf`."""
    found = ROUND_SUFFIX.match(run)
    return (found["seeds"], int(found["round"])) if found else (run, 1)


def is_further_round(run: str) -> bool:
    """Whether the run `run` is of round 2 or later: trained on a previous round's predictions, not on seeds."""
    return parse_run_name(run)[1] > 1


def resnet101_stand_in(deeplab: dict, synthetic: bool) -> bool:
    """Whether DeepLab ResNet101 starts from the synthetic stand-in for ImageNet weights (no file given)."""
    return synthetic and "resnet101" in deeplab["backbones"] and not deeplab["weights"]["resnet101"]


def check_config(deeplab: dict, seed_variants: list[str], synthetic: bool) -> None:
    """Fail before anything runs when the seeds stage cannot provide a seed set, a further round names one outside
    deeplab.seeds (or the ground truth), a seed set's name reads as a further round's, or weights are missing."""
    rounds_like = [name for name in deeplab["seeds"] if ROUND_SUFFIX.match(name)]
    if rounds_like:
        raise ConfigError(
            f"deeplab.seeds names {rounds_like}, whose `_round<N>` ending names a further DeepLab round's run "
            "(deeplab.rounds): its folder would be that round's. Rename the network that writes the seed set."
        )
    for name in deeplab["round_seeds"] or []:
        if name not in trainable_again(deeplab):
            raise ConfigError(
                f"deeplab.round_seeds names '{name}', but a further round trains again on one of deeplab.seeds, "
                f"the ground truth excepted: choose among {trainable_again(deeplab)}, or leave it null for all of them."
            )
    unknown = sorted(set(seed_sets(deeplab)) - set(seed_variants) - {GROUND_TRUTH})
    if unknown:
        raise ConfigError(
            f"deeplab.seeds names {unknown}, which the seeds stage does not write (it writes {seed_variants}; "
            "icd_sal needs data.saliency_root, a `<seed set>_<name>` seed set the network `networks.<name>`). "
            "Remove them from deeplab.seeds."
        )
    if not synthetic and "resnet101" in deeplab["backbones"] and not deeplab["weights"]["resnet101"]:
        raise ConfigError(
            "deeplab.backbones includes resnet101 but deeplab.weights.resnet101 is not set: on real data ResNet101 "
            "starts from ImageNet weights. Set it to a torchvision file (resnet101-63fe2227.pth)."
        )


def vgg16_fc6_dilation(config: dict) -> int:
    """VGG16's fc6 dilation: deeplab.fc6_dilation, else the one the fc6 it starts from was trained at.

    A user's file (deeplab.weights.vgg16, or pretrain.weights without init_from_icd) is ImageNet's, whose fc6
    DeepLab-LargeFOV runs at 12. The ICD backbone (init_from_icd) and the synthetic pretext stand-in learned a 3x3
    fc6 at dilation 1: run at 12, its taps read positions it never learned from (on the cpu preset's 96-px crops,
    whose maps are 12 cells wide, mostly padding), and DeepLab VGG16 then lagged ResNet101 by ~30 points on ground
    truth (issue 16).
    """
    deeplab = config["deeplab"]
    if deeplab["fc6_dilation"] is not None:
        return deeplab["fc6_dilation"]
    if deeplab["weights"]["vgg16"]:
        return LARGEFOV_DILATION
    trained_here = deeplab["init_from_icd"] or not config["pretrain"]["weights"]
    return TRAINED_FC6_DILATION if trained_here else LARGEFOV_DILATION


def training_options(
    deeplab: dict, backbone: str, model_options: dict, seed: int, normalisation: str, fc6_dilation: int
) -> dict:
    """`deeplab train-deeplab --options` of one backbone: training keys only, its own lr, VGG16's batch_norm (of the
    ICD backbone's `model_options`) and `fc6_dilation` (vgg16_fc6_dilation), and the input `normalisation` of the
    weights it starts from."""
    section = {key: value for key, value in deeplab.items() if key not in TEST_TIME_KEYS | {"fc6_dilation"}}
    section["lr"] = {backbone: deeplab["lr"][backbone]}
    model = {"batch_norm": model_options["batch_norm"], "fc6_dilation": fc6_dilation} if backbone == "vgg16" else {}
    return {"deeplab": section, "model": model, "normalisation": normalisation, "seed": seed}


def prediction_options(deeplab: dict) -> dict:
    """`deeplab predict-deeplab --options`: test scales, flip, and the CRF parameters when the CRF runs."""
    return {
        "scales": deeplab["test_scales"],
        "flip": deeplab["test_flip"],
        "crf": deeplab["crf"] if deeplab["test_crf"] else None,
    }


class Run(NamedTuple):
    """One DeepLab the configuration trains: a backbone on a seed set in a round, in its folder."""

    backbone: str
    seeds: str
    round: int
    folder: str

    @property
    def title(self) -> str:
        """Its column title in the Fig. 6 figure: `vgg16 icd_crf`, `vgg16 icd_crf r2` in round 2."""
        return f"{self.backbone} {self.seeds}" + (f" r{self.round}" if self.round > 1 else "")


def run_folder(root: str, backbone: str, run: str) -> str:
    return f"{root}/{backbone}/{run}"


def runs(root: str, deeplab: dict, backbones: list[str] | None = None) -> list[Run]:
    """Every model the configuration trains (or those of `backbones` only): per backbone, round 1 on each seed set,
    then rounds 2..deeplab.rounds on each of the round seed sets."""
    further = [(later, round_seed_sets(deeplab)) for later in range(2, deeplab["rounds"] + 1)]
    rounds = [(1, seed_sets(deeplab)), *further]
    return [
        Run(backbone, seeds, round_number, run_folder(root, backbone, run_name(seeds, round_number)))
        for backbone in backbones or deeplab["backbones"]
        for round_number, names in rounds
        for seeds in names
    ]


def training_labels(seeds_root: str, deeplab_root: str, backbone: str, run: str) -> str | list:
    """The labels the run `run` of `backbone` trains on: for a further round, the previous round's predictions of
    the training split (each backbone learns from its own); in round 1 the seed folder, or nothing (an empty input)
    for the ground truth, which the training step reads from the dataset."""
    seeds, round_number = parse_run_name(run)
    if round_number > 1:
        return f"{run_folder(deeplab_root, backbone, run_name(seeds, round_number - 1))}/{TRAINING_LABELS}"
    return [] if seeds == GROUND_TRUTH else f"{seeds_root}/{seeds}"


def stage_targets(root: str, deeplab: dict, test_split: str | None, backbones: list[str] | None = None) -> list[str]:
    """Trained models, evaluations and server tars (none where the dataset has no test split: COCO)."""
    names = ("model.pt", "evaluation.json") + ((f"{test_split}.tar",) if test_split else ())
    return [f"{run.folder}/{name}" for run in runs(root, deeplab, backbones) for name in names]
