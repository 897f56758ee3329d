# The DeepLab stage: one network per backbone x seed set (plus the CAM-seed and ground-truth reference
# rows), full-resolution predictions of the eval and test splits (no test split for COCO), mIoU, Tables 7/8 and a
# Fig. 6-style figure. Further rounds (deeplab.rounds): a network's predictions of the training split train the same
# backbone again, a run of its own named `<seeds>_round<r>`; the `seeds` wildcard is the run's name
# (deeplab.workflow.run_name), the seed set's own in round 1.

DEEPLAB = config["deeplab"]
DEEPLAB_ROOT = f"{RESULTS}/deeplab"
EVAL_SPLIT, TEST_SPLIT = config["data"]["eval_split"], config["data"]["test_split"]
deeplab_plan.check_config(DEEPLAB, SEED_VARIANTS, SYNTHETIC)
RESNET101_STAND_IN = deeplab_plan.resnet101_stand_in(DEEPLAB, SYNTHETIC)
DEEPLAB_RUNS = deeplab_plan.runs(DEEPLAB_ROOT, DEEPLAB)
DEEPLAB_TARGETS = deeplab_plan.stage_targets(DEEPLAB_ROOT, DEEPLAB, TEST_SPLIT)
# The test split's predictions in the VOC server's layout, packed into a tar: outputs and options of predict_deeplab
# (which predicts both splits in one process) only where the dataset has a test split (data.test_split null: COCO).
PREDICTION_TEST_OUTPUTS = (
    {
        "test": directory(f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/{TEST_SPLIT}"),
        "tar": f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/{TEST_SPLIT}.tar",
    }
    if TEST_SPLIT
    else {}
)
PREDICT_TEST_SPLIT = " --test-out-dir {output.test:q} --server-tar {output.tar:q}" if TEST_SPLIT else ""
# Backbone weights: deeplab.weights, else VGG16 takes the trained ICD network's backbone (init_from_icd)
# or the weights ICD started from, and ResNet101 the synthetic stand-in for ImageNet (real data requires
# deeplab.weights.resnet101, see check_config).
DEEPLAB_WEIGHTS = {
    "vgg16": (
        DEEPLAB["weights"]["vgg16"]
        if DEEPLAB["weights"]["vgg16"]
        else rules.export_icd_backbone.output[0] if DEEPLAB["init_from_icd"] else icd_plan.backbone_weights(config)
    ),
    "resnet101": (
        DEEPLAB["weights"]["resnet101"]
        if DEEPLAB["weights"]["resnet101"]
        else rules.pretrain_resnet101.output.weights if RESNET101_STAND_IN else []
    ),
}


wildcard_constraints:
    backbone="vgg16|resnet101",
    seeds=r"[A-Za-z0-9_]+",


rule train_deeplab:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        # the seed folder (none for the ground truth), or in a further round the previous round's train_labels
        labels=lambda wildcards: deeplab_plan.training_labels(
            f"{RESULTS}/seeds", DEEPLAB_ROOT, wildcards.backbone, wildcards.seeds
        ),
        weights=lambda wildcards: DEEPLAB_WEIGHTS[wildcards.backbone],
        data=dataset_inputs(),
    output:
        model=f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/model.pt",
        history=f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/history.json",
    log:
        f"{LOGS}/deeplab/train_{{backbone}}_{{seeds}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/deeplab/train_{{backbone}}_{{seeds}}.tsv"
    priority: deeplab_training_priority
    conda:
        "../../envs/torch.yaml"
    threads: DEEPLAB["workers"] + 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        options=lambda wildcards: as_json(
            deeplab_plan.training_options(
                DEEPLAB,
                wildcards.backbone,
                icd_plan.backbone_options(config, ICD_NORMALISATION),
                config["seed"],
                NORMALISATION["deeplab"][wildcards.backbone],
                deeplab_plan.vgg16_fc6_dilation(config),
            )
        ),
        labels=lambda wildcards, input: f"--labels-root {shlex.quote(input.labels)}" if input.labels else "",
        weights=lambda wildcards, input: f"--weights {shlex.quote(input.weights)}" if input.weights else "",
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "deeplab train-deeplab --dataset {input.dataset:q} {params.labels} {params.weights} --backbone {wildcards.backbone}"
        " --options {params.options:q} --gpus {resources.gpu} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule predict_deeplab:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        model=f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/model.pt",
        data=dataset_inputs(),
    output:
        **PREDICTION_TEST_OUTPUTS,
        eval=directory(f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/{EVAL_SPLIT}"),
    log:
        f"{LOGS}/deeplab/predict_{{backbone}}_{{seeds}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/deeplab/predict_{{backbone}}_{{seeds}}.tsv"
    priority: lambda wildcards: PRIORITY_FURTHER_ROUNDS if deeplab_plan.is_further_round(wildcards.seeds) else 3
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        options=as_json(deeplab_plan.prediction_options(DEEPLAB)),
    shell:
        "deeplab predict-deeplab --dataset {input.dataset:q} --model {input.model:q} --split eval --options {params.options:q}"
        f" --gpus {{resources.gpu}} --out-dir {{output.eval:q}}{PREDICT_TEST_SPLIT} > {{log:q}} 2>&1"


# The next round's training labels: the training split predicted as at test time (scales, flip, CRF), each image's
# final labels as <id>.png, a seed folder.
rule predict_deeplab_train:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        model=f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/model.pt",
        data=dataset_inputs(),
    output:
        directory(f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/{deeplab_plan.TRAINING_LABELS}"),
    log:
        f"{LOGS}/deeplab/predict_train_{{backbone}}_{{seeds}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/deeplab/predict_train_{{backbone}}_{{seeds}}.tsv"
    priority: PRIORITY_FURTHER_ROUNDS
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        options=as_json(deeplab_plan.prediction_options(DEEPLAB)),
    shell:
        "deeplab predict-deeplab --dataset {input.dataset:q} --model {input.model:q} --split train --as-seeds"
        " --options {params.options:q} --gpus {resources.gpu} --out-dir {output:q} > {log:q} 2>&1"


rule evaluate_deeplab:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        predictions=f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/{EVAL_SPLIT}",
        data=dataset_inputs(),
    output:
        f"{DEEPLAB_ROOT}/{{backbone}}/{{seeds}}/evaluation.json",
    log:
        f"{LOGS}/deeplab/evaluate_{{backbone}}_{{seeds}}.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        multiscale="--multiscale" if len(DEEPLAB["test_scales"]) > 1 or DEEPLAB["test_flip"] else "",
    shell:
        "deeplab evaluate-deeplab --dataset {input.dataset:q} --predictions {input.predictions:q} --backbone {wildcards.backbone}"
        " --seeds {wildcards.seeds} {params.multiscale} --out {output:q} > {log:q} 2>&1"


rule segmentation_table:
    input:
        [f"{run.folder}/evaluation.json" for run in DEEPLAB_RUNS],
    output:
        table=report(f"{RESULTS}/tables/segmentation.csv", caption="../report/deeplab_tables.rst", category="DeepLab"),
        per_class=report(
            f"{RESULTS}/tables/segmentation_per_class.csv", caption="../report/deeplab_tables.rst", category="DeepLab"
        ),
        markdown=report(f"{RESULTS}/tables/segmentation.md", caption="../report/deeplab_tables.rst", category="DeepLab"),
    log:
        f"{LOGS}/segmentation_table.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    shell:
        "deeplab segmentation-table --evaluations {input:q} --out {output.table:q} --per-class {output.per_class:q}"
        " --markdown {output.markdown:q} > {log:q} 2>&1"


rule segmentation_figure:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        predictions=[f"{run.folder}/{EVAL_SPLIT}" for run in DEEPLAB_RUNS],
        data=dataset_inputs(),
    output:
        report(f"{RESULTS}/figures/deeplab_fig6.png", caption="../report/deeplab_fig6.rst", category="DeepLab"),
    log:
        f"{LOGS}/segmentation_figure.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        # eval-split predictions after the CRF when it runs
        folders=[f"{run.folder}/{EVAL_SPLIT}/{'crf' if DEEPLAB['test_crf'] else 'raw'}" for run in DEEPLAB_RUNS],
        titles=[run.title for run in DEEPLAB_RUNS],
    shell:
        "deeplab segmentation-figure --dataset {input.dataset:q} --predictions {params.folders:q} --titles {params.titles:q}"
        " --out {output:q} > {log:q} 2>&1"


# Named targets: `snakemake --cores N deeplab_vgg16` trains, predicts and evaluates one backbone, every round.
rule deeplab_vgg16:
    input:
        deeplab_plan.stage_targets(DEEPLAB_ROOT, DEEPLAB, TEST_SPLIT, ["vgg16"]),


rule deeplab_resnet101:
    input:
        deeplab_plan.stage_targets(DEEPLAB_ROOT, DEEPLAB, TEST_SPLIT, ["resnet101"]),
