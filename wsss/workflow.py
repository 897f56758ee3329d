"""What the Snakemake rules of the data stage, and every stage's plumbing, need from the config.

Planning lives here as plain functions of the validated config, unit-tested in tests/test_planning.py; the
.smk files keep only what needs Snakemake itself (`expand`, `ancient`, `rules`, the rule bodies). The
method's planning is `icd.workflow`, the segmentation stage's `deeplab.workflow`. Nothing here imports torch:
the Snakefile is parsed on every invocation, however small.
"""

from __future__ import annotations

import hashlib
import json
import os


def as_json(section) -> str:
    """A config section as a canonical JSON string: the one `params:` value a step reruns on."""
    return json.dumps(section, sort_keys=True)


def results_root(config: dict) -> str:
    """Where a run's outputs go: results/<run>/ (relative to Snakemake's working directory)."""
    return f"results/{config['run']}"


def is_synthetic(config: dict) -> bool:
    return config["data"]["source"] == "synthetic"


def is_coco(config: dict) -> bool:
    return config["data"]["source"] == "coco"


def dataset_roots(config: dict) -> tuple[str, str, str | None]:
    """(voc_root, sbd_root, saliency_root) the pipeline reads: generated ones for synthetic data, COCO's converted
    tree (rule convert_coco's, masks of both splits in SegmentationClass) for coco, and SBD's converted folder when
    data.sbd_root is SBD's original release."""
    if is_synthetic(config):
        root = f"{results_root(config)}/data/VOC2012"
        return root, root, f"{root}/Saliency" if config["synthetic"]["saliency"] else None
    data = config["data"]
    if is_coco(config):
        return converted_coco(config), converted_coco(config), data["saliency_root"]
    sbd_root = converted_sbd(config) if sbd_release(config) else data["sbd_root"]
    return data["voc_root"], sbd_root, data["saliency_root"]


def converted_coco(config: dict) -> str:
    """Where MS-COCO 2014 (data.coco_root), converted once by rule convert_coco, lies in the VOC layout."""
    return f"{results_root(config)}/data/COCO2014"


def converted_folders(config: dict) -> set[str]:
    """The dataset folders a rule of the run writes from the user's download (COCO's tree, SBD's converted folder):
    inputs rebuilt when their rule changes, where the user's own folders are never rebuilt."""
    if is_coco(config):
        return {converted_coco(config)}
    return {converted_sbd(config)} if sbd_release(config) else set()


def sbd_release(config: dict) -> str | None:
    """SBD's original release folder when data.sbd_root is one (benchmark_RELEASE or its dataset/), which the rule
    convert_sbd turns into `converted_sbd`; None for a ready SegmentationClassAug tree and for other sources (SBD
    augments VOC only).

    Recognised from a few stat calls (wsss.data.sbd.release_folder), so planning does not grow with the dataset."""
    if config["data"]["source"] != "voc":
        return None
    from wsss.data.sbd import release_folder  # imported for real data only: the default run never needs it

    folder = release_folder(config["data"]["sbd_root"])
    return str(folder) if folder else None


def converted_sbd(config: dict) -> str:
    """Where SBD's release, converted once, lies in the ready layout: the pipeline's sbd_root from then on."""
    return f"{results_root(config)}/data/SBD"


def has_saliency(config: dict) -> bool:
    """Whether saliency maps exist, hence the I+S seeds (`icd_sal`)."""
    return dataset_roots(config)[2] is not None


# Where the synthetic generator writes its hard OoD set under the dataset root: wsss.data.synthetic's OOD_FOLDER and
# OOD_LIST, not imported, so that planning loads no image library (tests/test_ood_data.py holds them equal).
GENERATED_OOD = ("OoD", "ood_list.txt")


def ood_set(config: dict) -> tuple[str, str] | None:
    """(root, list relative to it) of the hard out-of-distribution images (W-OoD) the run reads, or None for none:
    data.ood_root and data.ood_list when the root is set; else, on synthetic data, the set the generator writes
    beside the dataset whenever synthetic.num_ood > 0."""
    data = config["data"]
    if data["ood_root"]:
        return data["ood_root"], data["ood_list"]
    if is_synthetic(config) and config["synthetic"]["num_ood"] > 0:
        folder, list_name = GENERATED_OOD
        return f"{dataset_roots(config)[0]}/{folder}", list_name
    return None


def ood_inputs(config: dict) -> list[str]:
    """The user's OoD list as an input of the dataset check: a new list (images added or removed) reruns the check,
    hence what reads its report. Only the list: planning never lists the OoD folder. The generated set lies in the
    synthetic dataset's folder, already an input."""
    data = config["data"]
    return [os.path.join(data["ood_root"], data["ood_list"])] if data["ood_root"] else []


# Where the synthetic generator writes its extra image-level-labelled set under the dataset root (list layout):
# wsss.data.synthetic's EXTRA_FOLDER and EXTRA_LIST, held equal in tests/test_extra_data.py as GENERATED_OOD is.
GENERATED_EXTRA = ("Extra", "extra_list.txt")


def extra_sets(config: dict) -> list[dict]:
    """The sets of extra image-level-labelled training images the run reads ({root, list} each, data.extra's form):
    data.extra when it names any; else, on synthetic data, the set the generator writes beside the dataset whenever
    synthetic.num_extra > 0; else none."""
    if config["data"]["extra"]:
        return config["data"]["extra"]
    if is_synthetic(config) and config["synthetic"]["num_extra"] > 0:
        folder, list_name = GENERATED_EXTRA
        return [{"root": f"{dataset_roots(config)[0]}/{folder}", "list": list_name}]
    return []


def extra_inputs(config: dict) -> list[str]:
    """What lists the user's extra images, as inputs of the dataset check: each set's list, or the Annotations folder
    of a VOC tree read whole, so that images added or removed rerun the check, hence what reads its report. Never an
    image folder: planning stays a few stat calls. The generated set lies in the synthetic dataset's folder, already
    an input."""
    if not config["data"]["extra"]:
        return []
    from wsss.data.extra import ExtraSet  # imported only for the user's sets: the default run never needs it

    return [str(ExtraSet.of_config(entry).index_path) for entry in config["data"]["extra"]]


def dataset_check(config: dict, backbone: dict) -> dict:
    """The dataset check's settings (validate_data's params): the source (recorded in the report), the roots, the
    splits ("" for no test split), the class list, and as the verb's arguments the user's weights file with the
    backbone shape it must fit (`backbone`: {"width", "batch_norm"}), the OoD set (`ood_set`) and the extra
    image-level-labelled sets (`extra_sets`)."""
    import shlex

    weights = config["pretrain"]["weights"]
    ood = ood_set(config)
    extra = extra_sets(config)
    return {
        "source": config["data"]["source"],
        "roots": [root or "" for root in dataset_roots(config)],
        "splits": [config["data"][key] or "" for key in ("train_split", "eval_split", "test_split")],
        "classes": as_json(config["data"]["classes"]),
        "canvases": as_json(explicit_canvases(config)),
        "weights": (f"--weights {shlex.quote(weights)} --backbone {shlex.quote(as_json(backbone))}" if weights else ""),
        "ood": f"--ood-root {shlex.quote(ood[0])} --ood-list {shlex.quote(ood[1])}" if ood else "",
        "extra": f"--extra {shlex.quote(as_json(extra))}" if extra else "",
    }


def explicit_canvases(config: dict) -> dict[str, int]:
    """The canvas sizes the config sets ({setting key: pixels}); those left null are derived from the data
    (wsss.data.canvas), and the set ones must hold its largest image, which the dataset check verifies."""
    settings = {
        "superpixels.feature_input_size": config["superpixels"]["feature_input_size"],
        "seeds.inference_size": config["seeds"]["inference_size"],
    }
    return {key: size for key, size in settings.items() if size is not None}


def checked_dataset(config: dict, check: dict) -> str:
    """The checked report's path, named after the check's settings.

    Snakemake records a failed job as if it had passed: under one name for all settings, a setting rejected
    and then put back would look changed, and rerun the check and everything after it. An empty setting (no
    weights file, no OoD set, no extra images) stays out of the name: a setting added to the check later leaves
    the name of a run that does not use it as it was, so its accepted report, and all that was made from it,
    stays valid.
    """
    settings = {key: value for key, value in check.items() if value != ""}
    digest = hashlib.sha256(as_json(settings).encode()).hexdigest()[:16]
    return f"{results_root(config)}/data/checked/{digest}.json"


def data_targets(config: dict) -> list[str]:
    """The data stage's final outputs: the accepted dataset report (and the generator's statistics)."""
    root = f"{results_root(config)}/data"
    return [f"{root}/dataset.json"] + ([f"{root}/synthetic_stats.json"] if is_synthetic(config) else [])
