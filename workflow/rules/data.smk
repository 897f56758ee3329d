# Data: generate the synthetic VOC (embedded default) and validate whatever dataset is used, up front.

from wsss.workflow import checked_dataset, dataset_check


rule synthesize_data:
    output:
        root=directory(f"{RESULTS}/data/VOC2012"),
        stats=f"{RESULTS}/data/synthetic_stats.json",
    log:
        f"{LOGS}/synthesize_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/synthesize_data.tsv"
    priority: 10
    conda:
        "../../envs/data.yaml"
    threads: 1
    params:
        options=as_json(config["synthetic"]),
    shell:
        "icd synthesize-data --out {output.root:q} --stats {output.stats:q} --options {params.options:q} > {log:q} 2>&1"


# The dataset check's settings (validate_data's params); its report is named after them (wsss.workflow).
DATASET_CHECK = dataset_check(
    config, {key: icd_plan.backbone_options(config, ICD_NORMALISATION)[key] for key in ("width", "batch_norm")}
)
CHECKED_DATASET = checked_dataset(config, DATASET_CHECK)


rule validate_data:
    input:
        data=dataset_inputs(),
        weights=config["pretrain"]["weights"] if config["pretrain"]["weights"] else [],
    output:
        temp(CHECKED_DATASET),
    log:
        f"{LOGS}/validate_data.log",
    benchmark:
        f"{RESULTS}/benchmarks/validate_data.tsv"
    priority: 10
    conda:
        "../../envs/data.yaml"
    # Reads every image (two readers on real data); the synthetic set takes a second, on the core the pretext
    # stand-in leaves free.
    threads: 1 if SYNTHETIC else 2
    params:
        **DATASET_CHECK,
    shell:
        "icd validate-data --voc-root {params.roots[0]:q} --sbd-root {params.roots[1]:q}"
        " --saliency-root {params.roots[2]:q} --train-split {params.splits[0]:q}"
        " --eval-split {params.splits[1]:q} --test-split {params.splits[2]:q}"
        " --workers {threads} {params.weights} --out {output:q} > {log:q} 2>&1"


# The checked report becomes data/dataset.json, what every later step reads, in a step of its own: Snakemake
# deletes a job's outputs when it reruns and when it fails, so a dataset the check rejects inside an existing
# run costs only the checked report (a temporary, from the check to its acceptance), never the accepted one.
rule accept_data:
    input:
        rules.validate_data.output[0],
    output:
        f"{RESULTS}/data/dataset.json",
    log:
        f"{LOGS}/accept_data.log",
    priority: 10
    localrule: True
    conda:
        "../../envs/data.yaml"
    threads: 1
    shell:
        "icd accept-data --candidate {input:q} --out {output:q} > {log:q} 2>&1"
