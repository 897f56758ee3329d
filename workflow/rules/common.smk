# Shared wiring: output locations, the command that runs a pipeline step, the dataset as an input. What each
# step is given is planned in Python (wsss.workflow, icd.workflow, deeplab.workflow); this file keeps only what
# needs Snakemake itself.

import os
import shlex
import sys

from snakemake.settings.types import DeploymentMethod

import deeplab.workflow as deeplab_plan
import icd.workflow as icd_plan
from wsss.core.config import check_data_roots
from wsss.nets.normalisation import backbone_normalisations
from wsss.workflow import (
    as_json,
    converted_folders,
    dataset_roots,
    is_coco,
    is_synthetic,
    results_root,
    sbd_release,
)

RESULTS = results_root(config)
LOGS = f"{RESULTS}/logs"
SYNTHETIC = is_synthetic(config)
COCO = is_coco(config)
# SBD's original release when data.sbd_root is one: rule convert_sbd makes the folder the pipeline reads from it.
SBD_RELEASE = sbd_release(config)
check_data_roots(config)  # a missing dataset folder fails here, naming the key, not later as a missing input
# The input normalisation of each backbone, decided by its weights (wsss.nets.normalisation): {"icd": ..., "deeplab":
# {backbone: ...}}. A weights file of unknown normalisation fails here, naming the key to set.
NORMALISATION = backbone_normalisations(config)
ICD_NORMALISATION = NORMALISATION["icd"]

# Each step's shell command calls `icd <verb>` or `deeplab <verb>`: a shell function running `python -m icd`,
# with the rule's conda environment's python under --use-conda, else the one running Snakemake.
# (Braces are doubled because Snakemake formats the prefix like a shell command.)
_USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
_PYTHON = "python" if _USE_CONDA else shlex.quote(sys.executable)
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
    f'icd() {{{{ {_PYTHON} -m icd "$@"; }}}}; '
    f'deeplab() {{{{ {_PYTHON} -m deeplab "$@"; }}}}; '
)


def dataset_inputs():
    """The dataset as an input: the generated folder, or the user's folders (wrapped in ancient: never rebuilt), the
    converted ones (rule convert_coco's or convert_sbd's output, rebuilt when its rule changes) in place of COCO and
    of SBD's original release."""
    if SYNTHETIC:
        return [rules.synthesize_data.output.root]
    converted = converted_folders(config)
    roots = dict.fromkeys(root for root in dataset_roots(config) if root)  # COCO's tree is both voc and sbd root
    return [root if root in converted else ancient(root) for root in roots]


def files_option(flag):
    """`<flag> <files>` of a rule's input of that name (its `flag` without dashes, dashes as underscores), or
    nothing when the input is empty: for the steps whose optional inputs only some configurations have."""
    name = flag.lstrip("-").replace("-", "_")

    def option(wildcards, input):
        files = input[name]
        return f"{flag} {' '.join(map(shlex.quote, files))}" if files else ""

    return option


def canvas_option(flag):
    """`<flag> <seeds.inference_size>`, or nothing when the config leaves it null: the step then derives it from the
    dataset's largest image (wsss.data.canvas)."""
    size = config["seeds"]["inference_size"]
    return f"{flag} {size}" if size is not None else ""


def family_network(wildcards):
    """The ICD network a seed family is made from (icd.seed_sets.SeedFamily.network)."""
    return SEED_FAMILIES[wildcards.family].network


def family_reads(name, paths):
    """An input of make_seeds: `paths` (a list, or a function of the wildcards giving one) when the wildcards' family
    reads `name` (icd.seed_sets.SeedFamily.reads)."""

    def files(wildcards):
        if name not in SEED_FAMILIES[wildcards.family].reads:
            return []
        return paths(wildcards) if callable(paths) else paths

    return files


# Which ready job Snakemake starts first when the cores are short (the highest `priority`): the one with the longest
# chain of work still ahead of it, as measured on the synthetic default (issue 19). The data, the pretext stand-in
# and the ICD trainings (10), then what turns their scores into the seed sets DeepLab trains on (8-6), the DeepLab
# trainings, ResNet101's (the longer, with its stand-in) first (5, 4), their predictions (3), further DeepLab rounds
# (deeplab.rounds: the training split's predictions and the trainings and predictions on them, 1) after round 1 of
# everything; tables, figures and evaluations (0) fill the cores that would otherwise idle. A job never ranks below
# one it feeds (tests/test_scheduling.py). A GPU cluster runs them all at once and never asks.
PRIORITY_DEEPLAB_SEEDS = 6
PRIORITY_FURTHER_ROUNDS = 1


def deeplab_seeds_priority(variants):
    """make_seeds and collect_seeds: ahead of the DeepLab trainings for a seed set DeepLab trains on, else last."""
    trained_on = set(deeplab_plan.seed_sets(config["deeplab"]))
    return PRIORITY_DEEPLAB_SEEDS if trained_on.intersection(variants) else 0


def deeplab_training_priority(wildcards):
    """train_deeplab: round 1's ResNet101 (the longer, with its stand-in) before its VGG16, a further round's after
    both."""
    if deeplab_plan.is_further_round(wildcards.seeds):
        return PRIORITY_FURTHER_ROUNDS
    return 5 if wildcards.backbone == "resnet101" else 4


def network_priority(network, priority):
    """`priority` for a job on the primary ICD network or on one whose seed sets DeepLab trains on, else 0: the other
    networks feed only tables."""
    trained_on = set(deeplab_plan.seed_sets(config["deeplab"]))
    written = {variant + ICD_NETWORKS[network].suffix for variant in ICD_NETWORKS[network].variants}
    return priority if network == icd_plan.PRIMARY or trained_on & written else 0


ICD_NETWORKS = icd_plan.networks(config)
SEED_VARIANTS = icd_plan.variants(config)
SEED_FAMILIES = icd_plan.families(config)
