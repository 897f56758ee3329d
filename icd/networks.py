"""The ICD networks a run trains, side by side: a named list in the config (`networks`), read when the workflow is
planned.

Each network is the `icd` section with overrides of its own. It is trained into `networks/<name>/`, its score maps
go to `networks/<name>/scores/`, and its seed sets and Table 1 rows carry its suffix: none for the primary network
`icd` (the paper's ICD, whose unsuffixed rows the paper's tables report), `_<name>` for every other one. Two are
built in: `icd`, and `no_td`, Table 3's ablation network (trained without top-down adaptation; its bottom-up and
refined seeds are the `*_no_td` rows). A user adds a variant with one config entry, switches a built-in one off
with `null`, and no rule changes: the rules take the network as a wildcard.

Pure Python, no numpy or torch: the Snakefile imports it at parse time.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsss.core.config import deep_merge, validated_section
from wsss.core.errors import ConfigError

PRIMARY = "icd"
# The built-in entries; a user's `networks` entries are merged onto them (None removes one).
BUILT_IN = {
    PRIMARY: {},
    "no_td": {"icd": {"top_down": False}, "seeds": ["icd_bottom_up", "icd_refined"]},
}
# Built in where the dataset has out-of-distribution images: ICD with W-OoD's ingredients (icd.ood), its CAM and ICD
# seeds beside the primary network's (the CRF-free CAM variants and the saliency fusion add nothing to compare).
BUILT_IN_OOD = {"ood": {"icd": {"ood": {}}, "seeds": ["cam", "icd_bottom_up", "icd_refined", "icd", "icd_crf"]}}
CAM_VARIANTS = ("cam", "cam_crf", "cam_sp")  # the CAM baseline, through the seed CRF, averaged in superpixels
STEP_VARIANTS = ("icd_bottom_up", "icd_refined")  # Table 3's steps before the adaptation
ADAPTED_VARIANTS = ("icd", "icd_crf", "icd_sal")  # from the top-down adapted scores: need icd.top_down
SALIENCY_VARIANTS = ("icd_sal",)  # need saliency maps
# Every seed set a network can write, in the order of the seed tables' rows.
BASE_VARIANTS = (*CAM_VARIANTS, *STEP_VARIANTS, *ADAPTED_VARIANTS)
# The maps icd.scores writes per present class, in order (CAM, bottom-up S, refined S', adapted S'').
SCORE_MAPS = ("cam", "bottom_up", "refined", "adapted")
# The score map each seed set is made from : Table 1 reports a network's maps that its
# seed sets use.
VARIANT_MAP = {
    "cam": "cam",
    "cam_crf": "cam",
    "cam_sp": "cam",
    "icd_bottom_up": "bottom_up",
    "icd_refined": "refined",
    "icd": "adapted",
    "icd_crf": "adapted",
    "icd_sal": "adapted",
}


def suffix_of(network: str) -> str:
    """What a network's seed sets and Table 1 rows are suffixed with: nothing for the primary network."""
    return "" if network == PRIMARY else f"_{network}"


@dataclass(frozen=True)
class Network:
    """One ICD network of the run: its `name`, the `icd` settings it trains with (the section with its overrides
    merged in) and the seed sets it writes (`variants`, unsuffixed, in table order)."""

    name: str
    icd: dict
    variants: tuple[str, ...]

    @property
    def suffix(self) -> str:
        return suffix_of(self.name)

    @property
    def folder(self) -> str:
        """Its folder under results/<run>/."""
        return f"networks/{self.name}"

    @property
    def score_maps(self) -> tuple[str, ...]:
        """The score maps its seed sets are made from, in SCORE_MAPS order: its Table 1 rows."""
        used = {VARIANT_MAP[variant] for variant in self.variants}
        return tuple(name for name in SCORE_MAPS if name in used)


def _possible_variants(icd: dict, saliency: bool) -> tuple[str, ...]:
    """The seed sets a network trained with these settings can make: adapted ones only with top-down adaptation,
    I+S only where saliency maps exist."""
    return tuple(
        variant
        for variant in BASE_VARIANTS
        if (icd["top_down"] or variant not in ADAPTED_VARIANTS) and (saliency or variant not in SALIENCY_VARIANTS)
    )


def _network(name: str, entry: dict, base_icd: dict, saliency: bool, built_in_seeds: bool) -> Network:
    where = f"networks.{name}"
    icd = validated_section("icd", deep_merge(base_icd, entry.get("icd") or {}), f"{where}.icd")
    possible = _possible_variants(icd, saliency)
    wanted = entry.get("seeds")
    if wanted is None:
        return Network(name, icd, possible)
    if built_in_seeds:  # a built-in list, not the user's: what this network can make of it
        return Network(name, icd, tuple(variant for variant in possible if variant in wanted))
    impossible = sorted(set(wanted) - set(possible))
    if impossible:
        raise ConfigError(
            f"{where}.seeds names {impossible}, which this network cannot make (icd, icd_crf and icd_sal need "
            f"icd.top_down, icd_sal also saliency maps; it can make {list(possible)}). Remove them from {where}.seeds."
        )
    return Network(name, icd, tuple(variant for variant in BASE_VARIANTS if variant in wanted))


def configured_networks(config: dict, saliency: bool, ood: bool = False) -> dict[str, Network]:
    """{name: Network} of the validated config, the primary first, then the others in the order configured.

    A network whose settings are the primary's is left out: it would train the same network again (the built-in
    `no_td` when icd.top_down is false already). `saliency`: whether the dataset has saliency maps; `ood`: whether
    it has out-of-distribution images (the built-in `ood` network, and what any network with icd.ood needs).
    """
    entries = {**BUILT_IN, **(BUILT_IN_OOD if ood else {})}
    configured = config.get("networks") or {}
    for name, entry in configured.items():  # a built-in name asked for gets the built-in settings, data or not
        built_in = entries.get(name) or {**BUILT_IN, **BUILT_IN_OOD}.get(name) or {}
        entries[name] = None if entry is None else deep_merge(built_in, entry)
    user_seeds = {name for name, entry in configured.items() if entry is not None and "seeds" in entry}
    if entries.get(PRIMARY) is None:
        raise ConfigError(f"networks.{PRIMARY} cannot be null: it is the ICD network every stage reads.")
    primary = _network(PRIMARY, entries.pop(PRIMARY), config["icd"], saliency, PRIMARY not in user_seeds)
    networks = {PRIMARY: primary}
    for name, entry in entries.items():
        if entry is not None:
            network = _network(name, entry, config["icd"], saliency, name not in user_seeds)
            if network.icd["ood"] is not None and not ood:
                raise ConfigError(
                    f"networks.{name} trains with out-of-distribution images (icd.ood) but the dataset has none: set "
                    "data.ood_root (and data.ood_list), or remove the network."
                )
            if network.icd != primary.icd:
                networks[name] = network
    _check_distinct_names(networks)
    return networks


def _check_distinct_names(networks: dict[str, Network]) -> None:
    """Two networks' seed sets must not share a folder: a network named after the end of a seed set's name
    (`crf`: its `icd` would be the primary's `icd_crf`) would overwrite the other's."""
    writers: dict[str, str] = {}
    for name, network in networks.items():
        for variant in network.variants:
            other = writers.setdefault(variant + network.suffix, name)
            if other != name:
                raise ConfigError(
                    f"networks.{name}: its seed set {variant}{network.suffix} would be written to the folder of the "
                    f"same name that network {other!r} writes. Rename the network."
                )
