"""The seed sets the seeds stage writes, grouped by what they are made from: read when the workflow is planned.

A seed set (a folder `seeds/<variant>/`) depends on some settings and not others: the CAM baselines on their
background thresholds but not on `seeds.threshold`, the CRF variants on `crf`, the I+S seeds on
`seeds.saliency_background`. Seed sets with the same inputs and settings form a family, written by one job
per shard, so that changing one setting reruns only the families (and the DeepLab rows trained on them)
that read it. Pure Python, no numpy: the Snakefile imports it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

# Suffix of the seed variants and Table 1 rows made from the ablation network (trained with icd.top_down
# false); the unsuffixed icd_bottom_up / icd_refined come from the full network, as the official
# inference writes S and S' of the one network it trained.
NO_TOP_DOWN = "_no_td"
CAM_VARIANTS = ("cam", "cam_crf", "cam_sp")  # the CAM baseline, through the seed CRF, averaged in superpixels
ABLATION_VARIANTS = (f"icd_bottom_up{NO_TOP_DOWN}", f"icd_refined{NO_TOP_DOWN}")  # Table 3's steps, ablation network
# Every seed set in the order of the seed tables' rows.
TABLE_ORDER = (*CAM_VARIANTS, "icd_bottom_up", "icd_refined", "icd", "icd_crf", *ABLATION_VARIANTS, "icd_sal")


@dataclass(frozen=True)
class SeedFamily:
    """Seed sets written together: `variants`, made from the score maps at `seeds.inference_size` and

    - `settings`: the other settings they depend on (`threshold` and `saliency_background` of the `seeds`
      section, `crf` the whole `crf` section), the only ones the family's job is given;
    - `reads`: the inputs besides the score maps and images (`superpixels`, `cam_background` the CAM
      baselines' chosen thresholds, `ablation_scores` the ablation network's score maps, `saliency`).
    """

    variants: tuple[str, ...]
    settings: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()


def seed_families(saliency: bool, ablation_network: bool, top_down: bool = True) -> dict[str, SeedFamily]:
    """{family: SeedFamily} of the seed sets a configuration writes (see `seed_variants`)."""
    families = {
        "cam": SeedFamily(("cam", "cam_sp"), reads=("cam_background", "superpixels")),
        "cam_crf": SeedFamily(("cam_crf",), settings=("crf",), reads=("cam_background",)),
        "icd": SeedFamily(("icd_bottom_up", "icd_refined") + (("icd",) if top_down else ()), settings=("threshold",)),
    }
    if ablation_network:
        families["icd_no_td"] = SeedFamily(ABLATION_VARIANTS, settings=("threshold",), reads=("ablation_scores",))
    if top_down:
        families["icd_crf"] = SeedFamily(("icd_crf",), settings=("threshold", "crf"))
    if saliency and top_down:
        families["icd_sal"] = SeedFamily(
            ("icd_sal",), settings=("threshold", "saliency_background"), reads=("saliency",)
        )
    return families


def seed_variants(saliency: bool, ablation_network: bool, top_down: bool = True) -> list[str]:
    """Seed folders the pipeline writes, in table order: the CAM baselines, Table 3's steps of the full network,
    the same steps of the ablation network (`<step>_no_td`) when it is trained, saliency fusion when maps exist.
    A network trained without top-down adaptation (`icd.top_down` false) has no adapted scores, hence no `icd`,
    `icd_crf` or `icd_sal` seeds. Those its families write (`seed_families` alone decides which exist)."""
    families = seed_families(saliency, ablation_network, top_down).values()
    written = {variant for family in families for variant in family.variants}
    return [variant for variant in TABLE_ORDER if variant in written]
