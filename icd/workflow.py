"""What the Snakemake rules of the ICD stages (pretrain, icd, scores, seeds) need from the config.

Plain functions of the validated config, unit-tested in tests/test_planning.py; the .smk files call them and
keep only what needs Snakemake itself. `normalisation` is the ICD backbone's input normalisation, decided from
its weights when the Snakefile is parsed (wsss.nets.normalisation.backbone_normalisations). No torch, no numpy:
the Snakefile is parsed on every invocation.
"""

from __future__ import annotations

from icd.seed_sets import SeedFamily, seed_families, seed_variants
from wsss.workflow import has_saliency, is_synthetic, results_root


def backbone_options(config: dict, normalisation: str) -> dict:
    """The ICD backbone's architecture and input normalisation, shared by every step that runs it."""
    model = config["model"]
    return {"width": model["width"], "batch_norm": model["backbone"] == "vgg16_bn", "normalisation": normalisation}


def backbone_weights(config: dict) -> str:
    """ImageNet weights given by the user, or the pretext-pretrained stand-in on synthetic data.

    Not ancient(): a weights file replaced at the same path is newer than what was made from it, so
    everything downstream reruns (and the trainers, seeing other bytes, start from scratch).
    """
    return config["pretrain"]["weights"] or f"{results_root(config)}/pretrain/backbone.pth"


def pretrain_options(config: dict, normalisation: str) -> dict:
    """`pretrain-backbone --options`: the pretext task's settings and the backbone it trains."""
    options = {key: value for key, value in config["pretrain"].items() if key != "weights"}
    return {**options, **backbone_options(config, normalisation)}


def superpixel_options(config: dict, normalisation: str) -> dict:
    """`superpixels --options`: the superpixel settings and the backbone whose features merge them."""
    options = {key: value for key, value in config["superpixels"].items() if key != "shards"}
    return {**options, **backbone_options(config, normalisation)}


def _shards(config: dict, folder: str, count: int, suffix: str = ".npz") -> list[str]:
    """results/<run>/<folder>/shard_<k><suffix> for k < count: the per-shard files (or folders) of a step."""
    return [f"{results_root(config)}/{folder}/shard_{shard}{suffix}" for shard in range(count)]


def superpixel_shards(config: dict) -> list[str]:
    return _shards(config, "superpixels", config["superpixels"]["shards"])


def ablation_network(config: dict) -> bool:
    """Whether a second network, trained without top-down adaptation, adds Table 3's `*_no_td` rows."""
    return config["seeds"]["ablation_network"] and config["icd"]["top_down"]


def without_top_down(config: dict) -> dict:
    """The `icd` settings of the ablation network: the full network's, without top-down adaptation."""
    return {**config["icd"], "top_down": False}


def training_options(config: dict, icd: dict, normalisation: str) -> dict:
    """`train-icd --options` for an ICD network with these `icd` settings (the full one or the ablation one)."""
    return {"model": config["model"], "icd": icd, "seed": config["seed"], "normalisation": normalisation}


def score_inference_options(config: dict, icd: dict, normalisation: str) -> dict:
    """`infer-scores --options` for the network trained with these `icd` settings."""
    return {
        "model": config["model"],
        "icd": icd,
        "normalisation": normalisation,
        "inference_size": config["seeds"]["inference_size"],
        "inference_scale": config["seeds"]["inference_scale"],
    }


def export_options(config: dict, normalisation: str) -> dict:
    """`export-icd-backbone --options`: how the trained network was built, to read its backbone."""
    return {"model": config["model"], "icd": config["icd"], "normalisation": normalisation}


def score_shards(config: dict, folder: str = "scores") -> list[str]:
    """Score shards of the full network (`scores`) or of the ablation network (`scores_without_top_down`)."""
    return _shards(config, folder, config["seeds"]["shards"])


def ablation_score_shards(config: dict) -> list[str]:
    """Score shards of the network trained without top-down adaptation; none when it is not trained."""
    return score_shards(config, "scores_without_top_down") if ablation_network(config) else []


def families(config: dict) -> dict[str, SeedFamily]:
    """The seed families the configuration writes (icd.seed_sets)."""
    return seed_families(has_saliency(config), ablation_network(config), config["icd"]["top_down"])


def variants(config: dict) -> list[str]:
    """The seed folders the configuration writes, in table order."""
    return seed_variants(has_saliency(config), ablation_network(config), config["icd"]["top_down"])


def family_of(config: dict) -> dict[str, str]:
    """{seed variant: the family that writes it}."""
    return {variant: name for name, family in families(config).items() for variant in family.variants}


def family_options(config: dict, family: str) -> dict:
    """`make-seeds --options` of a family: the score maps' canvas and exactly the settings its seeds read, so a
    setting change reruns only the families that read it."""
    seeds = config["seeds"]
    values = {
        "threshold": seeds["threshold"],
        "saliency_background": seeds["saliency_background"],
        "crf": config["crf"],
    }
    return {"canvas": seeds["inference_size"], **{name: values[name] for name in families(config)[family].settings}}


def family_shards(config: dict, family: str) -> list[str]:
    """The per-shard folders one family's jobs write (seeds/shards/<family>/shard_<k>)."""
    return _shards(config, f"seeds/shards/{family}", config["seeds"]["shards"], suffix="")


def stage_targets(config: dict, stage: str) -> list[str]:
    """The final outputs of one ICD stage: what `snakemake <stage>` builds (with everything upstream). The
    pretrain stage's ResNet101 stand-in belongs to DeepLab (deeplab.workflow)."""
    root = results_root(config)
    return {
        "pretrain": [f"{root}/pretrain/backbone.pth", f"{root}/pretrain/premise.json"] if is_synthetic(config) else [],
        "icd": [f"{root}/icd/model.pt", f"{root}/figures/icd_training.png"]
        + ([f"{root}/icd_without_top_down/model.pt"] if ablation_network(config) else []),
        "scores": [f"{root}/tables/score_map_ap.csv"],
        "seeds": [
            f"{root}/tables/seeds.csv",
            f"{root}/figures/seeds_fig4.png",
            f"{root}/figures/seeds_per_class_iou.png",
        ],
    }[stage]
