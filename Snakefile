# The ICD pipeline (Fan et al., CVPR 2020) as a Snakemake DAG. Rules are thin: they call `python -m icd`.
# Run: snakemake --cores N   (config.yaml is the synthetic default; add --configfile for real VOC)

from wsss.core.config import prepare_config


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


prepare_config(config)


wildcard_constraints:
    shard=r"\d+",


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/icd.smk"
include: "workflow/rules/scores.smk"
include: "workflow/rules/seeds.smk"
include: "workflow/rules/deeplab.smk"


rule all:
    default_target: True
    input:
        all_targets(),


# Named stage targets: `snakemake --cores N <stage>` builds that stage and everything it needs.
rule data:
    input:
        stage_targets("data"),


if SYNTHETIC:

    rule pretrain:
        input:
            stage_targets("pretrain"),


rule icd:
    input:
        stage_targets("icd"),


rule scores:
    input:
        stage_targets("scores"),


rule seeds:
    input:
        stage_targets("seeds"),
