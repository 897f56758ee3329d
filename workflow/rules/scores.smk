# Score maps of the trained ICD network (sharded) and their pixel-level AP (the paper's Table 1).


rule infer_scores:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        model=f"{RESULTS}/icd/model.pt",
        superpixels=icd_plan.superpixel_shards(config),
        data=dataset_inputs(),
    output:
        f"{RESULTS}/scores/shard_{{shard}}.npz",
    log:
        f"{LOGS}/scores/shard_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scores/shard_{{shard}}.tsv"
    priority: 8
    conda:
        "../../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1 if not SYNTHETIC else 0,
    params:
        shards=config["seeds"]["shards"],
        options=as_json(icd_plan.score_inference_options(config, config["icd"], ICD_NORMALISATION)),
    shell:
        "icd infer-scores --dataset {input.dataset:q} --model {input.model:q} --superpixels {input.superpixels:q}"
        " --shard {wildcards.shard} --shards {params.shards} --options {params.options:q} --gpus {resources.gpu}"
        " --out {output:q}"
        " > {log:q} 2>&1"


use rule infer_scores as infer_scores_without_top_down with:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        model=f"{RESULTS}/icd_without_top_down/model.pt",
        superpixels=icd_plan.superpixel_shards(config),
        data=dataset_inputs(),
    output:
        f"{RESULTS}/scores_without_top_down/shard_{{shard}}.npz",
    log:
        f"{LOGS}/scores_without_top_down/shard_{{shard}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/scores_without_top_down/shard_{{shard}}.tsv"
    # Only tables read the ablation network's scores.
    priority: 0
    params:
        shards=config["seeds"]["shards"],
        options=as_json(icd_plan.score_inference_options(config, icd_plan.without_top_down(config), ICD_NORMALISATION)),


rule score_map_ap:
    input:
        dataset=f"{RESULTS}/data/dataset.json",
        scores=icd_plan.score_shards(config),
        ablation_scores=icd_plan.ablation_score_shards(config),
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
        ablation=files_option("--ablation-scores"),
    shell:
        "icd score-map-ap --dataset {input.dataset:q} --scores {input.scores:q}"
        " {params.inference_size} {params.ablation} --out {output:q} > {log:q} 2>&1"
