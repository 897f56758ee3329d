# Data: generate the synthetic VOC (embedded default) and validate whatever dataset is used, up front.


rule synthesize_data:
    output:
        root=directory(f"{RESULTS}/data/VOC2012"),
        stats=f"{RESULTS}/data/synthetic_stats.json",
    params:
        options=as_json(config["synthetic"]),
    log:
        f"{LOGS}/synthesize_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize_data.tsv"
    threads: 1
    conda:
        "../../envs/data.yaml"
    shell:
        "icd synthesize --out {output.root:q} --stats {output.stats:q} --options {params.options:q} > {log:q} 2>&1"


rule validate_data:
    input:
        data=dataset_inputs(),
        weights=ancient(config["pretrain"]["weights"]) if config["pretrain"]["weights"] else [],
    output:
        f"{RESULTS}/data/dataset.json",
    params:
        roots=[root or "" for root in dataset_roots()],
        splits=[config["data"][key] for key in ("train_split", "eval_split", "test_split")],
        weights=lambda wildcards, input: (
            f"--weights {shlex.quote(input.weights)} --backbone "
            + shlex.quote(as_json({key: backbone_options()[key] for key in ("width", "batch_norm")}))
            if input.weights else ""
        ),
    log:
        f"{LOGS}/validate_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/validate_data.tsv"
    threads: 2
    conda:
        "../../envs/data.yaml"
    shell:
        "icd validate-data --voc-root {params.roots[0]:q} --sbd-root {params.roots[1]:q}"
        " --saliency-root {params.roots[2]:q} --train-split {params.splits[0]:q}"
        " --eval-split {params.splits[1]:q} --test-split {params.splits[2]:q}"
        " --workers {threads} {params.weights} --out {output:q} > {log:q} 2>&1"
