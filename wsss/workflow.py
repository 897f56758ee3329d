"""What the Snakemake rules of the data stage, and every stage's plumbing, need from the config.

Planning lives here as plain functions of the validated config, unit-tested in tests/test_planning.py; the
.smk files keep only what needs Snakemake itself (`expand`, `ancient`, `rules`, the rule bodies). The
method's planning is `icd.workflow`, the segmentation stage's `deeplab.workflow`. Nothing here imports torch:
the Snakefile is parsed on every invocation, however small.
"""

from __future__ import annotations

import hashlib
import json


def as_json(section) -> str:
    """A config section as a canonical JSON string: the one `params:` value a step reruns on."""
    return json.dumps(section, sort_keys=True)


def results_root(config: dict) -> str:
    """Where a run's outputs go: results/<run>/ (relative to Snakemake's working directory)."""
    return f"results/{config['run']}"


def is_synthetic(config: dict) -> bool:
    return config["data"]["source"] == "synthetic"


def dataset_roots(config: dict) -> tuple[str, str, str | None]:
    """(voc_root, sbd_root, saliency_root) the pipeline reads: generated ones for synthetic data."""
    if is_synthetic(config):
        root = f"{results_root(config)}/data/VOC2012"
        return root, root, f"{root}/Saliency" if config["synthetic"]["saliency"] else None
    data = config["data"]
    return data["voc_root"], data["sbd_root"], data["saliency_root"]


def has_saliency(config: dict) -> bool:
    """Whether saliency maps exist, hence the I+S seeds (`icd_sal`)."""
    return dataset_roots(config)[2] is not None


def dataset_check(config: dict, backbone: dict) -> dict:
    """The dataset check's settings (validate_data's params): the roots, the splits, and the user's weights file
    with the backbone shape it must fit (`backbone`: {"width", "batch_norm"}) as the verb's arguments."""
    import shlex

    weights = config["pretrain"]["weights"]
    return {
        "roots": [root or "" for root in dataset_roots(config)],
        "splits": [config["data"][key] for key in ("train_split", "eval_split", "test_split")],
        "weights": (f"--weights {shlex.quote(weights)} --backbone {shlex.quote(as_json(backbone))}" if weights else ""),
    }


def checked_dataset(config: dict, check: dict) -> str:
    """The checked report's path, named after the check's settings.

    Snakemake records a failed job as if it had passed: under one name for all settings, a setting rejected
    and then put back would look changed, and rerun the check and everything after it.
    """
    digest = hashlib.sha256(as_json(check).encode()).hexdigest()[:16]
    return f"{results_root(config)}/data/checked/{digest}.json"


def data_targets(config: dict) -> list[str]:
    """The data stage's final outputs: the accepted dataset report (and the generator's statistics)."""
    root = f"{results_root(config)}/data"
    return [f"{root}/dataset.json"] + ([f"{root}/synthetic_stats.json"] if is_synthetic(config) else [])
