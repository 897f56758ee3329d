"""What the Snakemake rules of the DeepLab stage need from the config (kept out of the .smk files)."""

from __future__ import annotations

from wsss.core.errors import ConfigError

GROUND_TRUTH = "gt"
# Keys the training step does not read: test-time settings, the list of runs, and the weights and their
# normalisation (the step gets the file and the resolved normalisation apart).
TEST_TIME_KEYS = frozenset(
    {"backbones", "seeds", "baselines", "weights", "normalisation", "test_scales", "test_flip", "test_crf", "crf"}
)
# VGG16's fc6 (deeplab.model.DeepLabLargeFOV): LargeFOV's dilation for ImageNet's fc6, a 7x7 classifier layer
# DeepLab subsampled to a 3x3 at dilation 12, and the dilation of the fc6 this pipeline trains (ICD's, the pretext
# stand-in's: a 3x3 at dilation 1).
LARGEFOV_DILATION = 12
TRAINED_FC6_DILATION = 1


def seed_sets(deeplab: dict) -> list[str]:
    """The seed sets trained on: deeplab.seeds, then the baselines (cam seeds, ground truth) not already there."""
    return deeplab["seeds"] + [name for name in deeplab["baselines"] if name not in deeplab["seeds"]]


def resnet101_stand_in(deeplab: dict, synthetic: bool) -> bool:
    """Whether DeepLab ResNet101 starts from the synthetic stand-in for ImageNet weights (no file given)."""
    return synthetic and "resnet101" in deeplab["backbones"] and not deeplab["weights"]["resnet101"]


def check_config(deeplab: dict, seed_variants: list[str], synthetic: bool) -> None:
    """Fail before anything runs when the seeds stage cannot provide a seed set or weights are missing."""
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


def run_folder(root: str, backbone: str, seeds: str) -> str:
    return f"{root}/{backbone}/{seeds}"


def runs(root: str, deeplab: dict, backbones: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(backbone, seed set, folder) of every model the configuration trains (or of `backbones` only)."""
    return [
        (backbone, seeds, run_folder(root, backbone, seeds))
        for backbone in backbones or deeplab["backbones"]
        for seeds in seed_sets(deeplab)
    ]


def stage_targets(root: str, deeplab: dict, test_split: str | None, backbones: list[str] | None = None) -> list[str]:
    """Trained models, evaluations and server tars (none where the dataset has no test split: COCO)."""
    names = ("model.pt", "evaluation.json") + ((f"{test_split}.tar",) if test_split else ())
    return [f"{folder}/{name}" for _, _, folder in runs(root, deeplab, backbones) for name in names]
