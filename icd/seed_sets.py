"""The seed sets the seeds stage writes, grouped by what they are made from: read when the workflow is planned.

A seed set (a folder `seeds/<variant>/`) depends on some settings and not others: the CAM baselines on their
background thresholds but not on `seeds.threshold`, the CRF variants on `crf`, the I+S seeds on
`seeds.saliency_background`. Seed sets of one network with the same inputs and settings form a family, written
by one job per shard, so that changing one setting reruns only the families (and the DeepLab rows trained on them)
that read it. Every network of the run (icd.networks) has its own families, named and suffixed as its seed sets
are. Pure Python, no numpy: the Snakefile imports it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

from icd.networks import BASE_VARIANTS, Network


@dataclass(frozen=True)
class SeedFamily:
    """Seed sets written together from one network's score maps at `seeds.inference_size`:

    - `network`: the network whose scores they are made from; `base_variants` the seed sets as icd.seeds names
      them, written as `variants` (with the network's suffix);
    - `settings`: the other settings they depend on (`threshold` and `saliency_background` of the `seeds`
      section, `crf` the whole `crf` section), the only ones the family's job is given;
    - `reads`: the inputs besides the score maps and images (`superpixels`, `cam_background` the network's CAM
      baselines' chosen thresholds, `saliency`).
    """

    network: str
    suffix: str
    base_variants: tuple[str, ...]
    settings: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()

    @property
    def variants(self) -> tuple[str, ...]:
        return tuple(variant + self.suffix for variant in self.base_variants)


# {family: (its seed sets, settings, reads)} before they are narrowed to what a network writes.
_FAMILIES = {
    "cam": (("cam", "cam_sp"), (), ("cam_background", "superpixels")),
    "cam_crf": (("cam_crf",), ("crf",), ("cam_background",)),
    "icd": (("icd_bottom_up", "icd_refined", "icd"), ("threshold",), ()),
    "icd_crf": (("icd_crf",), ("threshold", "crf"), ()),
    "icd_sal": (("icd_sal",), ("threshold", "saliency_background"), ("saliency",)),
}


def seed_families(networks: dict[str, Network]) -> dict[str, SeedFamily]:
    """{family: SeedFamily} of the seed sets the networks write, named `<family><network suffix>`."""
    families = {}
    for network in networks.values():
        for name, (variants, settings, reads) in _FAMILIES.items():
            written = tuple(variant for variant in variants if variant in network.variants)
            if written:
                families[name + network.suffix] = SeedFamily(network.name, network.suffix, written, settings, reads)
    return families


def seed_variants(networks: dict[str, Network]) -> list[str]:
    """Seed folders the pipeline writes, in table order: the primary network's, then each other network's."""
    return [
        variant + network.suffix
        for network in networks.values()
        for variant in BASE_VARIANTS
        if variant in network.variants
    ]
