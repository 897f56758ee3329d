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
from wsss.workflow import as_json, dataset_roots, is_synthetic, results_root

RESULTS = results_root(config)
LOGS = f"{RESULTS}/logs"
SYNTHETIC = is_synthetic(config)
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
    """The dataset as an input: the generated folder, or the user's folders (wrapped in ancient: never rebuilt)."""
    if SYNTHETIC:
        return [rules.synthesize_data.output.root]
    return [ancient(root) for root in dataset_roots(config) if root]


def files_option(flag):
    """`<flag> <files>` of a rule's input of that name (its `flag` without dashes, dashes as underscores), or
    nothing when the input is empty: for the steps whose optional inputs only some configurations have."""
    name = flag.lstrip("-").replace("-", "_")

    def option(wildcards, input):
        files = input[name]
        return f"{flag} {' '.join(map(shlex.quote, files))}" if files else ""

    return option


def family_reads(name, paths):
    """An input of make_seeds: `paths` when the wildcards' family reads `name` (icd.seed_sets.SeedFamily.reads)."""
    return lambda wildcards: paths if name in SEED_FAMILIES[wildcards.family].reads else []


ABLATION_NETWORK = icd_plan.ablation_network(config)
SEED_VARIANTS = icd_plan.variants(config)
SEED_FAMILIES = icd_plan.families(config)
