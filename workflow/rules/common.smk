# Shared helpers: output locations, the command that runs a pipeline step, and per-source inputs.

import json
import os
import shlex
import sys

from snakemake.settings.types import DeploymentMethod

from wsss.core.config import check_data_roots
from wsss.nets.normalisation import backbone_normalisations
from icd.seeds import seed_variants

RESULTS = f"results/{config['run']}"
LOGS = f"{RESULTS}/logs"
SYNTHETIC = config["data"]["source"] == "synthetic"
# DeepLab ResNet101 starts from the synthetic stand-in for ImageNet weights unless the user gives a file.
RESNET101_STAND_IN = (
    SYNTHETIC and "resnet101" in config["deeplab"]["backbones"] and not config["deeplab"]["weights"]["resnet101"]
)
check_data_roots(config)  # a missing dataset folder fails here, naming the key, not later as a missing input
# The input normalisation of each backbone, decided by its weights (wsss.nets.normalisation): {"icd": ..., "deeplab":
# {backbone: ...}}. A weights file of unknown normalisation fails here, naming the key to set.
NORMALISATION = backbone_normalisations(config)

# Each step's shell command calls `icd <verb> ...`: a shell function running `python -m icd`,
# with the rule's conda environment's python under --use-conda, else the one running Snakemake.
# (Braces are doubled because Snakemake formats the prefix like a shell command.)
_USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_PYTHON = "python" if _USE_CONDA else shlex.quote(sys.executable)
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f'icd() {{{{ {_PYTHON} -m icd "$@"; }}}}; '
    f'deeplab() {{{{ {_PYTHON} -m deeplab "$@"; }}}}; '
)


def as_json(section):
    """A config section as a canonical JSON string: the one `params:` value a step reruns on."""
    return json.dumps(section, sort_keys=True)


def dataset_roots():
    """(voc_root, sbd_root, saliency_root) the pipeline reads: generated ones for synthetic data."""
    if SYNTHETIC:
        root = f"{RESULTS}/data/VOC2012"
        return root, root, f"{root}/Saliency" if config["synthetic"]["saliency"] else None
    data = config["data"]
    return data["voc_root"], data["sbd_root"], data["saliency_root"]


def dataset_inputs():
    """The dataset as an input: the generated folder, or the user's folders (wrapped in ancient: never rebuilt)."""
    if SYNTHETIC:
        return [rules.synthesize_data.output.root]
    return [ancient(root) for root in dataset_roots() if root]


def backbone_weights():
    """ImageNet weights given by the user, or the pretext-pretrained stand-in on synthetic data.

    Not ancient(): a weights file replaced at the same path is newer than what was made from it, so
    everything downstream reruns (and the trainers, seeing other bytes, start from scratch).
    """
    if config["pretrain"]["weights"]:
        return config["pretrain"]["weights"]
    return f"{RESULTS}/pretrain/backbone.pth"


def stage_targets(stage):
    """The final outputs of one stage: what `snakemake <stage>` builds (with everything upstream)."""
    return {
        "data": [f"{RESULTS}/data/dataset.json"] + ([f"{RESULTS}/data/synthetic_stats.json"] if SYNTHETIC else []),
        "pretrain": ([f"{RESULTS}/pretrain/backbone.pth", f"{RESULTS}/pretrain/premise.json"] if SYNTHETIC else [])
        + ([f"{RESULTS}/pretrain/resnet101.pth"] if RESNET101_STAND_IN else []),
        "icd": [f"{RESULTS}/icd/model.pt", f"{RESULTS}/figures/icd_training.png"]
        + ([f"{RESULTS}/icd_without_top_down/model.pt"] if ABLATION_NETWORK else []),
        "scores": [f"{RESULTS}/tables/score_map_ap.csv"],
        "seeds": [
            f"{RESULTS}/tables/seeds.csv",
            f"{RESULTS}/figures/seeds_fig4.png",
            f"{RESULTS}/figures/seeds_per_class_iou.png",
        ],
    }[stage]


def all_targets():
    targets = [path for stage in ("data", "pretrain", "icd", "scores", "seeds") for path in stage_targets(stage)]
    targets += DEEPLAB_TARGETS  # defined in deeplab.smk
    targets += [f"{RESULTS}/tables/segmentation.csv", f"{RESULTS}/figures/deeplab_fig6.png"]
    return targets


def backbone_options():
    """The ICD backbone's architecture and input normalisation, shared by every step that runs it."""
    model = config["model"]
    return {
        "width": model["width"],
        "batch_norm": model["backbone"] == "vgg16_bn",
        "normalisation": NORMALISATION["icd"],
    }


def pretrain_options():
    options = {key: value for key, value in config["pretrain"].items() if key != "weights"}
    return {**options, **backbone_options()}


def superpixel_options():
    options = {key: value for key, value in config["superpixels"].items() if key != "shards"}
    return {**options, **backbone_options()}


def superpixel_shards():
    return expand(f"{RESULTS}/superpixels/shard_{{shard}}.npz", shard=range(config["superpixels"]["shards"]))


def score_shards():
    return expand(f"{RESULTS}/scores/shard_{{shard}}.npz", shard=range(config["seeds"]["shards"]))


# A second network trained without top-down adaptation adds Table 3's bottom-up and refined rows `*_no_td`.
ABLATION_NETWORK = config["seeds"]["ablation_network"] and config["icd"]["top_down"]
ICD_WITHOUT_TOP_DOWN = {**config["icd"], "top_down": False}


def icd_training_options(icd):
    """`train-icd --options` for an ICD network with these `icd` settings (the full one or the ablation one)."""
    return as_json(
        {"model": config["model"], "icd": icd, "seed": config["seed"], "normalisation": NORMALISATION["icd"]}
    )


def score_inference_options(icd):
    """`scores --options` for the network trained with these `icd` settings."""
    return as_json(
        {
            "model": config["model"],
            "icd": icd,
            "normalisation": NORMALISATION["icd"],
            "inference_size": config["seeds"]["inference_size"],
            "inference_scale": config["seeds"]["inference_scale"],
        }
    )


def ablation_score_shards():
    """Score shards of the network trained without top-down adaptation; none when it is not trained."""
    if not ABLATION_NETWORK:
        return []
    return expand(f"{RESULTS}/scores_without_top_down/shard_{{shard}}.npz", shard=range(config["seeds"]["shards"]))


def ablation_scores_option(wildcards, input):
    """`--ablation-scores <shards>` for the steps that add the `*_no_td` rows from them, else nothing."""
    return "--ablation-scores " + " ".join(map(shlex.quote, input.ablation)) if input.ablation else ""


SEED_VARIANTS = seed_variants(
    saliency=dataset_roots()[2] is not None, ablation_network=ABLATION_NETWORK, top_down=config["icd"]["top_down"]
)
