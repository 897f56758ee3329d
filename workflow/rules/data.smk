# Data: generate the synthetic VOC (embedded default), convert SBD as downloaded and MS-COCO 2014, and validate
# whatever dataset is used, up front.

from wsss.workflow import (
    checked_dataset,
    converted_coco,
    converted_sbd,
    dataset_check,
    extra_inputs,
    ood_inputs,
)


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


# SBD as downloaded (data.sbd_root at benchmark_RELEASE): its .mat maps, with VOC's train masks, become the ready
# SegmentationClassAug layout under the run, once (wsss.data.sbd); the pipeline reads that folder as its sbd_root.
# Planned only then: for a ready tree or synthetic data nothing asks for its output, and it has no inputs.
SBD_INPUTS = {"sbd": ancient(SBD_RELEASE), "voc": ancient(config["data"]["voc_root"])} if SBD_RELEASE else {}


rule convert_sbd:
    input:
        **SBD_INPUTS,
    output:
        directory(converted_sbd(config)),
    log:
        f"{LOGS}/convert_sbd.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert_sbd.tsv"
    priority: 10
    conda:
        "../../envs/data.yaml"
    # Decodes ~10,000 .mat maps and writes as many PNGs: the cores validate_data's readers take too.
    threads: 2
    shell:
        "icd convert-sbd --sbd-root {input.sbd:q} --voc-root {input.voc:q} --workers {threads} --out {output:q}"
        " > {log:q} 2>&1"


# MS-COCO 2014 (data.source coco): the download at data.coco_root becomes the VOC layout under the run, once
# (wsss.data.coco: image symlinks, XML labels, class maps, the train and val lists); the pipeline reads that tree as
# its voc_root and sbd_root. Planned only then, with no inputs otherwise, as convert_sbd. Planning never reads the
# annotation JSONs: the conversion's report (its counts) reaches dataset.json through validate_data.
COCO_INPUTS = {"coco": ancient(config["data"]["coco_root"])} if COCO else {}


rule convert_coco:
    input:
        **COCO_INPUTS,
    output:
        root=directory(converted_coco(config)),
        report=f"{RESULTS}/data/coco_conversion.json",
    log:
        f"{LOGS}/convert_coco.log",
    benchmark:
        f"{RESULTS}/benchmarks/convert_coco.tsv"
    priority: 10
    conda:
        "../../envs/data.yaml"
    # Rasterises the instance masks of 122,218 images: the cores validate_data's readers take too.
    threads: 2
    shell:
        "icd convert-coco --coco-root {input.coco:q} --workers {threads} --out {output.root:q}"
        " --report {output.report:q} > {log:q} 2>&1"


# The dataset check's settings (validate_data's params); its report is named after them (wsss.workflow).
DATASET_CHECK = dataset_check(
    config, {key: icd_plan.backbone_options(config, ICD_NORMALISATION)[key] for key in ("width", "batch_norm")}
)
CHECKED_DATASET = checked_dataset(config, DATASET_CHECK)


rule validate_data:
    input:
        data=dataset_inputs(),
        ood=ood_inputs(config),
        extra=extra_inputs(config),
        weights=config["pretrain"]["weights"] if config["pretrain"]["weights"] else [],
        conversion=rules.convert_coco.output.report if COCO else [],
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
        conversion=lambda wildcards, input: f"--conversion {shlex.quote(input.conversion)}" if input.conversion else "",
    # An empty root or split (no saliency maps, no test split) is given as `--option=`: Snakemake leaves an empty
    # value unquoted, and `--option ` would take the next option as its value.
    shell:
        "icd validate-data --source {params.source} --voc-root {params.roots[0]:q} --sbd-root {params.roots[1]:q}"
        " --saliency-root={params.roots[2]:q} --train-split {params.splits[0]:q}"
        " --eval-split {params.splits[1]:q} --test-split={params.splits[2]:q} --classes {params.classes:q}"
        " --canvases {params.canvases:q}"
        " --workers {threads} {params.weights} {params.ood} {params.extra} {params.conversion} --out {output:q}"
        " > {log:q} 2>&1"


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
