# The ICD pipeline (Fan et al., CVPR 2020) as a Snakemake DAG. Rules are thin: they call `python -m icd`.
# Run: snakemake --cores N   (config.yaml is the synthetic default; add --configfile for real VOC)

from wsss.core.config import prepare_config
from wsss.workflow import data_targets


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


# Named stage targets: `snakemake --cores N <stage>` builds that stage and everything it needs.
STAGE_TARGETS = {
    "data": data_targets(config),
    "pretrain": icd_plan.stage_targets(config, "pretrain")
    + ([rules.pretrain_resnet101.output.weights] if RESNET101_STAND_IN else []),
    **{stage: icd_plan.stage_targets(config, stage) for stage in ("icd", "scores", "seeds")},
}


rule all:
    default_target: True
    input:
        [path for targets in STAGE_TARGETS.values() for path in targets],
        DEEPLAB_TARGETS,
        f"{RESULTS}/tables/segmentation.csv",
        f"{RESULTS}/figures/deeplab_fig6.png",


rule data:
    input:
        STAGE_TARGETS["data"],


if SYNTHETIC:

    rule pretrain:
        input:
            STAGE_TARGETS["pretrain"],


rule icd:
    input:
        STAGE_TARGETS["icd"],


rule scores:
    input:
        STAGE_TARGETS["scores"],


rule seeds:
    input:
        STAGE_TARGETS["seeds"],
