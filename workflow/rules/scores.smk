# Score maps of the trained ICD network (sharded) and their pixel-level AP (the paper's Table 1).


rule infer_scores:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        model=f"{RESULTS}/networks/{{network}}/model.pt",
        superpixels=icd_plan.superpixel_shards(config),
        data=dataset_inputs(),
    output:
        f"{RESULTS}/networks/{{network}}/scores/shard_{{shard}}.npz",
    log:
        f"{LOGS}/scores/{{network}}/shard_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scores/{{network}}/shard_{{shard}}.tsv"
    # The primary network's scores feed the seeds DeepLab trains on; the other networks' only tables (unless
    # deeplab.seeds names one of their seed sets).
    priority: lambda wildcards: network_priority(wildcards.network, 8)
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        shards=config["seeds"]["shards"],
        options=lambda wildcards: as_json(
            icd_plan.score_inference_options(config, wildcards.network, ICD_NORMALISATION)
        ),
    shell:
        "icd infer-scores --dataset {input.dataset:q} --model {input.model:q} --superpixels {input.superpixels:q}"
        " --shard {wildcards.shard} --shards {params.shards} --options {params.options:q} --gpus {resources.gpu}"
        " --out {output:q}"
        " > {log:q} 2>&1"


rule score_map_ap:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        scores=[shard for name in ICD_NETWORKS for shard in icd_plan.score_shards(config, name)],
        data=dataset_inputs(),
    output:
        report(f"{RESULTS}/tables/score_map_ap.csv", caption="../report/score_map_ap.rst", category="ICD"),
    log:
        f"{LOGS}/score_map_ap.log",
    benchmark:
        f"{RESULTS}/benchmarks/score_map_ap.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 1
    params:
        inference_size=canvas_option("--inference-size"),
        networks=as_json(icd_plan.score_map_ap_networks(config)),
    shell:
        "icd score-map-ap --dataset {input.dataset:q} --networks {params.networks:q}"
        " {params.inference_size} --out {output:q} > {log:q} 2>&1"
