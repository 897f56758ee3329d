# Seeds: the threshold sweep (Table 2, CAM baselines), seed PNGs per family of seed sets and shard (icd.seed_sets:
# a setting reruns only the families that read it), per-variant folders, quality tables.


rule seed_sweep:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        scores=lambda wildcards: icd_plan.score_shards(config, wildcards.network),
        superpixels=icd_plan.superpixel_shards(config),
        data=dataset_inputs(),
    output:
        table=f"{RESULTS}/networks/{{network}}/seed_thresholds.csv",
        choice=f"{RESULTS}/networks/{{network}}/cam_background.json",
    log:
        f"{LOGS}/seed_sweep/{{network}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/seed_sweep/{{network}}.tsv"
    # The CAM seeds' background threshold.
    priority: lambda wildcards: network_priority(wildcards.network, 7)
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        options=as_json(
            {
                "canvas": config["seeds"]["inference_size"],
                "thresholds": config["seeds"]["table_thresholds"],
                "cam_backgrounds": config["seeds"]["cam_backgrounds"],
            }
        ),
    shell:
        "icd seed-sweep --dataset {input.dataset:q} --scores {input.scores:q} --superpixels {input.superpixels:q}"
        " --options {params.options:q}"
        " --out-table {output.table:q} --out-choice {output.choice:q} > {log:q} 2>&1"


wildcard_constraints:
    family="|".join(SEED_FAMILIES),
    variant="|".join(SEED_VARIANTS),


rule make_seeds:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        scores=lambda wildcards: icd_plan.score_shards(config, family_network(wildcards)),
        superpixels=family_reads("superpixels", icd_plan.superpixel_shards(config)),
        cam_background=family_reads(
            "cam_background", lambda wildcards: [icd_plan.cam_background(config, family_network(wildcards))]
        ),
        data=dataset_inputs(),
    output:
        directory(f"{RESULTS}/seeds/shards/{{family}}/shard_{{shard}}"),
    log:
        f"{LOGS}/seeds/{{family}}/shard_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/seeds/{{family}}/shard_{{shard}}.tsv"
    priority: lambda wildcards: deeplab_seeds_priority(SEED_FAMILIES[wildcards.family].variants)
    conda:
        "../../envs/crf.yaml"
    threads: 1
    params:
        shards=config["seeds"]["shards"],
        variants=lambda wildcards: SEED_FAMILIES[wildcards.family].base_variants,
        network=family_network,
        superpixels=files_option("--superpixels"),
        cam_background=files_option("--cam-background"),
        options=lambda wildcards: as_json(icd_plan.family_options(config, wildcards.family)),
    shell:
        "icd make-seeds --dataset {input.dataset:q} --variants {params.variants:q} --scores {input.scores:q}"
        " --network {params.network:q} {params.superpixels} {params.cam_background}"
        " --shard {wildcards.shard} --shards {params.shards} --options {params.options:q}"
        " --out {output:q}"
        " > {log:q} 2>&1"


rule collect_seeds:
    input:
        lambda wildcards: icd_plan.family_shards(config, icd_plan.family_of(config)[wildcards.variant]),
    output:
        directory(f"{RESULTS}/seeds/{{variant}}"),
    log:
        f"{LOGS}/collect_seeds/{{variant}}.log",
    priority: lambda wildcards: deeplab_seeds_priority([wildcards.variant])
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        root=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "icd collect-seeds --shards {input:q} --variants {wildcards.variant} --out-root {params.root:q} > {log:q} 2>&1"


SWEPT_NETWORKS = icd_plan.swept_networks(config)


rule seed_table:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        seeds=[f"{RESULTS}/seeds/{variant}" for variant in SEED_VARIANTS],
        sweeps=[icd_plan.threshold_sweep(config, name) for name in SWEPT_NETWORKS],
        cam_backgrounds=[icd_plan.cam_background(config, name) for name in SWEPT_NETWORKS],
        data=dataset_inputs(),
    output:
        table=report(f"{RESULTS}/tables/seeds.csv", caption="../report/seeds.rst", category="Seeds"),
        per_class=report(
            f"{RESULTS}/tables/seeds_per_class.csv", caption="../report/seeds_per_class.rst", category="Seeds"
        ),
    log:
        f"{LOGS}/seed_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/seed_table.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        variants=SEED_VARIANTS,
        networks=SWEPT_NETWORKS,
        threshold=config["seeds"]["threshold"],
        root=lambda wildcards, input: os.path.dirname(input.seeds[0]),
    shell:
        "icd seed-table --dataset {input.dataset:q} --seeds-root {params.root:q} --variants {params.variants:q}"
        " --threshold {params.threshold} --networks {params.networks:q} --cam-backgrounds {input.cam_backgrounds:q}"
        " --sweeps {input.sweeps:q} --out {output.table:q} --per-class {output.per_class:q} > {log:q} 2>&1"


rule context_leakage:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        seeds=[f"{RESULTS}/seeds/{variant}" for variant in SEED_VARIANTS],
        data=dataset_inputs(),
    output:
        report(f"{RESULTS}/tables/context_leakage.csv", caption="../report/context_leakage.rst", category="Seeds"),
    log:
        f"{LOGS}/context_leakage.log",
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        variants=SEED_VARIANTS,
        root=lambda wildcards, input: os.path.dirname(input.seeds[0]),
    shell:
        "icd context-leakage --dataset {input.dataset:q} --seeds-root {params.root:q} --variants {params.variants:q}"
        " --out {output:q} > {log:q} 2>&1"


rule seed_figure:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        scores=icd_plan.score_shards(config, icd_plan.PRIMARY),
        seeds=[f"{RESULTS}/seeds/{variant}" for variant in ("cam", "cam_crf", "icd", "icd_crf")],
        data=dataset_inputs(),
    output:
        report(f"{RESULTS}/figures/seeds_fig4.png", caption="../report/seeds_fig4.rst", category="Seeds"),
    log:
        f"{LOGS}/seed_figure.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        canvas=canvas_option("--canvas"),
        root=lambda wildcards, input: os.path.dirname(input.seeds[0]),
    shell:
        "icd seed-figure --dataset {input.dataset:q} --scores {input.scores:q} --seeds-root {params.root:q}"
        " {params.canvas} --out {output:q} > {log:q} 2>&1"


rule seed_iou_chart:
    input:
        f"{RESULTS}/tables/seeds_per_class.csv",
    output:
        report(
            f"{RESULTS}/figures/seeds_per_class_iou.png", caption="../report/seeds_per_class_iou.rst", category="Seeds"
        ),
    log:
        f"{LOGS}/seed_iou_chart.log",
    conda:
        "../../envs/report.yaml"
    threads: 1
    shell:
        "icd seed-iou-chart --per-class {input:q} --out {output:q} > {log:q} 2>&1"


OOD_NETWORK = icd_plan.compared_ood_network(config)


rule ood_figure:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        scores=icd_plan.score_shards(config, icd_plan.PRIMARY),
        ood_scores=icd_plan.score_shards(config, OOD_NETWORK) if OOD_NETWORK else [],
        seeds=[f"{RESULTS}/seeds/icd_crf", f"{RESULTS}/seeds/icd_crf_{OOD_NETWORK}"],
        data=dataset_inputs(),
    output:
        report(f"{RESULTS}/figures/ood_fig4.png", caption="../report/ood_fig4.rst", category="Seeds"),
    log:
        f"{LOGS}/ood_figure.log",
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        network=OOD_NETWORK,
        canvas=canvas_option("--canvas"),
        root=lambda wildcards, input: os.path.dirname(input.seeds[0]),
    shell:
        "icd ood-figure --dataset {input.dataset:q} --scores {input.scores:q} --ood-scores {input.ood_scores:q}"
        " --network {params.network:q} --seeds-root {params.root:q} {params.canvas} --out {output:q} > {log:q} 2>&1"
