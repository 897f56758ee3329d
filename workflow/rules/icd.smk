# The ICD stage: superpixels (sharded) from the pretrained backbone, then one round of ICD training.


rule superpixels:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        weights=icd_plan.backbone_weights(config),
        data=dataset_inputs(),
    output:
        f"{RESULTS}/superpixels/shard_{{shard}}.npz",
    log:
        f"{LOGS}/superpixels/shard_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/superpixels/shard_{{shard}}.tsv"
    priority: 10
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        shards=config["superpixels"]["shards"],
        options=as_json(icd_plan.superpixel_options(config, ICD_NORMALISATION)),
    shell:
        "icd superpixels --dataset {input.dataset:q} --weights {input.weights:q} --shard {wildcards.shard}"
        " --shards {params.shards} --options {params.options:q} --gpus {resources.gpu} --out {output:q} > {log:q} 2>&1"


wildcard_constraints:
    network="|".join(ICD_NETWORKS),


rule train_icd:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        superpixels=icd_plan.superpixel_shards(config),
        weights=icd_plan.backbone_weights(config),
        data=dataset_inputs(),
    output:
        model=f"{RESULTS}/networks/{{network}}/model.pt",
        history=f"{RESULTS}/networks/{{network}}/history.json",
    log:
        f"{LOGS}/train_icd/{{network}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_icd/{{network}}.tsv"
    # Everything downstream waits for these: start them before the other jobs that are ready with them (the
    # priorities in common.smk).
    priority: 10
    conda:
        "../../envs/torch.yaml"
    # The training thread plus its loader workers, as train_deeplab. On 2 CPU cores two networks then train side by
    # side, one core each: 1.2x the steps per second of one 2-thread training at a time (a 2-thread ICD step is only
    # 1.7x faster than a 1-thread one).
    threads: config["icd"]["workers"] + 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        options=lambda wildcards: as_json(icd_plan.training_options(config, wildcards.network, ICD_NORMALISATION)),
        out_dir=lambda wildcards, output: os.path.dirname(output.model),
    shell:
        "icd train-icd --dataset {input.dataset:q} --superpixels {input.superpixels:q} --weights {input.weights:q}"
        " --options {params.options:q} --gpus {resources.gpu} --out-dir {params.out_dir:q} > {log:q} 2>&1"


rule training_curves:
    input:
        f"{RESULTS}/networks/icd/history.json",
    output:
        report(f"{RESULTS}/figures/icd_training.png", caption="../report/icd_training.rst", category="ICD"),
    log:
        f"{LOGS}/training_curves.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    shell:
        "icd training-curves --history {input:q} --out {output:q} > {log:q} 2>&1"


rule export_icd_backbone:
    input:
        f"{RESULTS}/networks/icd/model.pt",
    output:
        f"{RESULTS}/networks/icd/backbone.pth",
    log:
        f"{LOGS}/export_icd_backbone.log",
    # VGG16 DeepLab starts from it.
    priority: PRIORITY_DEEPLAB_SEEDS
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        options=as_json(icd_plan.export_options(config, ICD_NORMALISATION)),
    shell:
        "icd export-icd-backbone --model {input:q} --options {params.options:q} --out {output:q} > {log:q} 2>&1"
