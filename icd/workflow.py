"""What the Snakemake rules of the ICD stages (pretrain, icd, scores, seeds) need from the config.

Plain functions of the validated config, unit-tested in tests/test_planning.py; the .smk files call them and
keep only what needs Snakemake itself. `normalisation` is the ICD backbone's input normalisation, decided from
its weights when the Snakefile is parsed (wsss.nets.normalisation.backbone_normalisations). No torch, no numpy:
the Snakefile is parsed on every invocation.
"""

from __future__ import annotations

import functools
import json

from icd.networks import CAM_VARIANTS, PRIMARY, Network, configured_networks
from icd.seed_sets import SeedFamily, seed_families, seed_variants
from wsss.workflow import has_saliency, is_synthetic, ood_set, results_root


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


@functools.cache
def _networks(sections: str, saliency: bool, ood: bool) -> dict[str, Network]:
    return configured_networks(json.loads(sections), saliency, ood)


def networks(config: dict) -> dict[str, Network]:
    """The ICD networks the run trains (icd.networks), the primary first. Resolved once per config: the rules ask
    for them many times while the Snakefile is parsed."""
    sections = json.dumps({"icd": config["icd"], "networks": config.get("networks")})
    return _networks(sections, has_saliency(config), ood_set(config) is not None)


def network_folder(config: dict, name: str) -> str:
    """results/<run>/networks/<name>: the trained network, its history and score shards."""
    return f"{results_root(config)}/{networks(config)[name].folder}"


def training_options(config: dict, network: str, normalisation: str) -> dict:
    """`train-icd --options` of one network: its own `icd` settings."""
    icd = networks(config)[network].icd
    return {"model": config["model"], "icd": icd, "seed": config["seed"], "normalisation": normalisation}


def score_inference_options(config: dict, network: str, normalisation: str) -> dict:
    """`infer-scores --options` of one network."""
    return {
        "model": config["model"],
        "icd": networks(config)[network].icd,
        "normalisation": normalisation,
        "inference_size": config["seeds"]["inference_size"],
        "inference_scale": config["seeds"]["inference_scale"],
    }


def export_options(config: dict, normalisation: str) -> dict:
    """`export-icd-backbone --options`: how the primary network was built, to read its backbone."""
    return {"model": config["model"], "icd": networks(config)[PRIMARY].icd, "normalisation": normalisation}


def score_shards(config: dict, network: str = PRIMARY) -> list[str]:
    """Score shards of one network (networks/<name>/scores/shard_<k>.npz)."""
    return _shards(config, f"{networks(config)[network].folder}/scores", config["seeds"]["shards"])


def cam_background(config: dict, network: str = PRIMARY) -> str:
    """The CAM baselines' background thresholds chosen for one network's CAM (rule seed_sweep)."""
    return f"{network_folder(config, network)}/cam_background.json"


def threshold_sweep(config: dict, network: str = PRIMARY) -> str:
    """Table 2 and the CAM background sweeps of one network (rule seed_sweep)."""
    return f"{network_folder(config, network)}/seed_thresholds.csv"


def swept_networks(config: dict) -> list[str]:
    """The networks whose score maps the threshold sweep reads: those writing CAM seeds (which need the chosen
    background thresholds) and the primary one (Table 2)."""
    return [
        name
        for name, network in networks(config).items()
        if name == PRIMARY or set(CAM_VARIANTS).intersection(network.variants)
    ]


def compared_ood_network(config: dict) -> str | None:
    """The W-OoD network (icd.ood) the OoD figure compares with the primary one on the synthetic data's context
    masks: the first that writes `icd_crf`; None when there is none, or no context masks (real data)."""
    if not is_synthetic(config):
        return None
    found = [
        name
        for name, network in networks(config).items()
        if network.icd["ood"] is not None and "icd_crf" in network.variants
    ]
    return found[0] if found else None


def score_map_ap_networks(config: dict) -> dict:
    """`score-map-ap --networks`: {suffix: {"maps": Table 1 rows, "scores": shards}} for every network."""
    return {
        network.suffix: {"maps": list(network.score_maps), "scores": score_shards(config, name)}
        for name, network in networks(config).items()
    }


def families(config: dict) -> dict[str, SeedFamily]:
    """The seed families the configuration writes (icd.seed_sets)."""
    return seed_families(networks(config))


def variants(config: dict) -> list[str]:
    """The seed folders the configuration writes, in table order."""
    return seed_variants(networks(config))


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
        "icd": [f"{network_folder(config, name)}/model.pt" for name in networks(config)]
        + [f"{root}/figures/icd_training.png"],
        "scores": [f"{root}/tables/score_map_ap.csv"],
        "seeds": [
            f"{root}/tables/seeds.csv",
            f"{root}/figures/seeds_fig4.png",
            f"{root}/figures/seeds_per_class_iou.png",
        ]
        # where the generator says which pixels hold a class's context
        + ([f"{root}/tables/context_leakage.csv"] if is_synthetic(config) else [])
        + ([f"{root}/figures/ood_fig4.png"] if compared_ood_network(config) else []),
    }[stage]
