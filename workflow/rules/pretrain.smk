# Backbone initialisation on synthetic data: a pretext-pretrained stand-in for ImageNet weights,
# and the measurement of the ICD premise (fg/bg features form separate clusters) it should give.


rule pretrain_backbone:
    output:
        weights=f"{RESULTS}/pretrain/backbone.pth",
        metrics=f"{RESULTS}/pretrain/metrics.json",
    log:
        f"{LOGS}/pretrain_backbone.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_backbone.tsv"
    priority: 10
    conda:
        "../../envs/torch.yaml"
    # One core: a two-thread step costs 1.3x the CPU of a one-thread one (the network is tiny), and the other core
    # meanwhile makes the dataset, the ResNet101 stand-in and DeepLab ResNet101 on ground truth (the superpixels
    # need these weights).
    threads: 1
    params:
        options=as_json(icd_plan.pretrain_options(config, ICD_NORMALISATION)),
    shell:
        "icd pretrain-backbone --out {output.weights:q} --metrics {output.metrics:q} --options {params.options:q} > {log:q} 2>&1"


rule measure_premise:
    input:
        weights=icd_plan.backbone_weights(config),
        dataset=f"{RESULTS}/data/dataset.json",
        data=dataset_inputs(),
    output:
        f"{RESULTS}/pretrain/premise.json",
    log:
        f"{LOGS}/measure_premise.log",
    benchmark:
        f"{RESULTS}/benchmarks/measure_premise.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        root=lambda wildcards, input: input.data[0],
        options=as_json(icd_plan.backbone_options(config, ICD_NORMALISATION)),
    shell:
        "icd measure-premise --weights {input.weights:q} --data-root {params.root:q} --options {params.options:q}"
        " --out {output:q} > {log:q} 2>&1"


# The stand-in for ImageNet ResNet101 weights: the DeepLab ResNet101 backbone trained as a multi-label
# classifier on the training split's image-level labels (deeplab.classifier). DeepLab ResNet101 starts
# from it unless deeplab.weights.resnet101 is set.
rule pretrain_resnet101:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        data=dataset_inputs(),
    output:
        weights=f"{RESULTS}/pretrain/resnet101.pth",
        metrics=f"{RESULTS}/pretrain/resnet101_metrics.json",
    log:
        f"{LOGS}/pretrain_resnet101.log",
    benchmark:
        f"{RESULTS}/benchmarks/pretrain_resnet101.tsv"
    priority: 5
    conda:
        "../../envs/torch.yaml"
    threads: config["resnet_pretrain"]["workers"] + 1
    resources:
        gpu=0,
    params:
        # a function: the normalisation exists only when DeepLab trains ResNet101, the only case this rule runs
        options=lambda wildcards: as_json(
            {
                **config["resnet_pretrain"],
                "width": config["deeplab"]["width"],
                "seed": config["seed"],
                "normalisation": NORMALISATION["deeplab"]["resnet101"],
            }
        ),
    shell:
        "deeplab pretrain-resnet101 --dataset {input.dataset:q} --options {params.options:q} --out {output.weights:q}"
        " --metrics {output.metrics:q} --gpus {resources.gpu} > {log:q} 2>&1"
