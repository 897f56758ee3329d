"""Load, merge and validate the pipeline configuration against workflow/schemas/config.schema.yaml.

The Snakefile and the CLI both go through `prepare_config`, so a typo or a wrong type fails before
any work starts, with the offending key named.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from wsss.core.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = PROJECT_ROOT / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT_CONFIG_PATH = PROJECT_ROOT / "config.yaml"


def deep_merge(base: Mapping, update: Mapping) -> dict:
    """Recursively merge `update` into a copy of `base` (as Snakemake merges several --configfile)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@functools.cache
def schema() -> dict:
    """The config schema, parsed once per process (with libyaml where PyYAML has it: the pure-Python parser
    costs a noticeable share of Snakemake's planning time)."""
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@functools.cache
def _validators():
    """(a Draft 2020-12 validator of the schema, one that also fills the schema's defaults in place).

    The filling one is `snakemake.utils.validate(..., set_default=True)`'s mechanism (jsonschema's FAQ
    recipe), except that every default is a copy: the parsed schema is shared by every config of the process.
    """
    import jsonschema
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    check_properties = base.VALIDATORS["properties"]

    def fill_defaults(validator, properties, instance, schema):
        if validator.is_type(instance, "object"):
            for name, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(name, copy.deepcopy(subschema["default"]))
        yield from check_properties(validator, properties, instance, schema)

    return base(schema()), validators.extend(base, {"properties": fill_defaults})(schema())


def _validate_with_defaults(config: dict) -> None:
    """Validate in place and fill the schema's defaults.

    The best-matching error is reported first, naming the key and the fix in one line.
    """
    import jsonschema

    checking, filling = _validators()
    error = jsonschema.exceptions.best_match(checking.iter_errors(config))
    if error is not None:
        key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
        raise ConfigError(
            f"invalid configuration at '{key}': {error.message}. "
            f"Allowed keys, types and defaults are described in {SCHEMA_PATH.relative_to(PROJECT_ROOT)}."
        )
    filling.validate(config)


def validated_section(section: str, value: dict, where: str) -> dict:
    """A copy of `value` validated as the config section `section` with the schema's defaults filled in: for a
    section given again elsewhere (e.g. `networks.<name>.icd`, merged onto `icd`). Errors name `where`."""
    import jsonschema

    full = schema()
    subschema = {"$defs": full["$defs"], **full["properties"][section]}
    _, filling = _validators()
    value = copy.deepcopy(value)
    error = jsonschema.exceptions.best_match(type(filling)(subschema).iter_errors(value))
    if error is not None:
        key = ".".join([where, *(str(p) for p in error.absolute_path)])
        raise ConfigError(
            f"invalid configuration at '{key}': {error.message}. "
            f"Allowed keys, types and defaults are described in {SCHEMA_PATH.relative_to(PROJECT_ROOT)}."
        )
    return value


def prepare_config(config: dict) -> dict:
    """Validate `config` in place: the preset applied, schema defaults filled, cross-checks run.

    With the `cpu` preset (the synthetic source's default, `preset: cpu` for any other), `synthetic_overrides`
    supplies CPU-sized values for every key the config does not set itself (explicit settings win); with `paper`
    (real data's default) the schema's defaults, the paper's settings, apply. The preset's values are validated
    either way, so a typo in them never goes unnoticed.
    """
    explicit = {key: value for key, value in config.items() if key != "synthetic_overrides"}
    overrides = config.get("synthetic_overrides") or {}
    merged = deep_merge(overrides, explicit)
    merged["synthetic_overrides"] = overrides
    _validate_with_defaults(merged)
    synthetic = merged["data"]["source"] == "synthetic"
    preset = merged["preset"] or ("cpu" if synthetic else "paper")
    if preset == "cpu":
        config.clear()
        config.update(merged)
    else:
        _validate_with_defaults(config)
    config["preset"] = preset
    if synthetic:
        _check_synthetic(config)
    else:
        _check_real_data(config)
    derive_from_the_data(config)
    return config


# The splits each source's tree has, for the split keys the config leaves unset: VOC's (and the synthetic set's,
# which copies VOC's), and the lists of the converted COCO tree (wsss.data.coco), which has no test split: COCO's
# test images come without annotations, and no server scores predictions packed the VOC way.
_DEFAULT_SPLITS = {
    "voc": {"train_split": "train_aug", "eval_split": "val", "test_split": "test"},
    "coco": {"train_split": "train", "eval_split": "val", "test_split": None},
}
_DEFAULT_SPLITS["synthetic"] = _DEFAULT_SPLITS["voc"]


def derive_from_the_data(config: dict) -> None:
    """Settings whose default depends on the dataset, filled in where the config leaves them null (or, for the
    splits, unset: a null test split means none): DeepLab trains on ICD's CRF seeds, and on its saliency seeds
    (I+S) only where saliency maps exist, so a dataset without them runs with the defaults instead of stopping at a
    seed set nobody can make; the classes are VOC's, or COCO's for coco, unless set; the splits are the source's."""
    data = config["data"]
    for key, split in _DEFAULT_SPLITS[data["source"]].items():
        data.setdefault(key, split)
    if data["classes"] is None:
        data["classes"] = list(_source_classes(data["source"]))
    deeplab = config["deeplab"]
    if deeplab["seeds"] is None:
        saliency = config["synthetic"]["saliency"] if data["source"] == "synthetic" else data["saliency_root"]
        deeplab["seeds"] = ["icd_crf"] + (["icd_sal"] if saliency else [])


def _source_classes(source: str) -> tuple[str, ...]:
    """What an unset data.classes means: COCO's 80 for coco, VOC's 20 for VOC and the synthetic set."""
    if source == "coco":
        from wsss.data.coco import COCO_CLASSES  # imported for COCO only: it loads pycocotools

        return COCO_CLASSES
    from wsss.data.classes import FOREGROUND_CLASSES

    return FOREGROUND_CLASSES


def _check_synthetic(config: dict) -> None:
    from wsss.data.classes import FOREGROUND_CLASSES

    if config["data"]["classes"] not in (None, list(FOREGROUND_CLASSES)):
        raise ConfigError(
            "invalid configuration at 'data.classes': the synthetic dataset is labelled with VOC's 20 classes "
            "(choose among them with synthetic.classes). Leave data.classes unset, or use data.source voc for a "
            "dataset of your own classes."
        )
    synthetic = config["synthetic"]
    strays = sorted(set(synthetic["context_classes"]) - set(synthetic["classes"]))
    if strays:
        raise ConfigError(
            f"invalid configuration at 'synthetic.context_classes': {strays} not in synthetic.classes. "
            "A context class must be one of the generated classes."
        )
    low, high = synthetic["objects_per_image"]
    if low > high or synthetic["min_size"] > synthetic["max_size"]:
        raise ConfigError(
            "invalid configuration at 'synthetic': objects_per_image and min_size/max_size must be "
            "[low, high] pairs with low <= high."
        )


def _check_real_data(config: dict) -> None:
    data = config["data"]
    if config["pretrain"]["weights"] is None:
        raise ConfigError(
            f"data.source is '{data['source']}' but pretrain.weights is not set: the ICD backbone starts from "
            "ImageNet VGG16 weights. Set pretrain.weights to a torchvision VGG16 file (vgg16-397923af.pth)."
        )
    if data["source"] == "coco":
        _check_coco(data)
    elif data["sbd_root"] is None:
        data["sbd_root"] = data["voc_root"]


def _check_coco(data: dict) -> None:
    """The converted COCO tree fixes what the config could otherwise choose: its labels are COCO's 1..80 in
    COCO's order, and it has no test split; voc_root and sbd_root are the converted tree, never the user's."""
    from wsss.data.coco import COCO_CLASSES

    if data["classes"] not in (None, list(COCO_CLASSES)):
        raise ConfigError(
            "invalid configuration at 'data.classes': with data.source coco the labels are COCO's 80 classes in "
            "COCO's order (wsss.data.coco.COCO_CLASSES), as the conversion writes them. Leave data.classes unset."
        )
    if data.get("test_split") is not None:
        raise ConfigError(
            "invalid configuration at 'data.test_split': the converted COCO tree has no test split (COCO's test "
            "images have no annotations and no VOC-style server). Leave data.test_split unset or null."
        )
    strays = [key for key in ("voc_root", "sbd_root") if data[key] is not None]
    if strays:
        raise ConfigError(
            f"invalid configuration at 'data.{strays[0]}': with data.source coco the pipeline reads the tree it "
            "converts from data.coco_root (results/<run>/data/COCO2014). Leave data.voc_root and data.sbd_root unset."
        )


# What each dataset folder must be, for the error when it is missing.
_DATA_ROOT_FIXES = {
    "voc_root": "Set data.voc_root to the VOC2012 folder (JPEGImages/, Annotations/, ImageSets/).",
    "sbd_root": "Set data.sbd_root to the folder holding SegmentationClassAug/ and ImageSets/SegmentationAug/, "
    "or to SBD as downloaded (benchmark_RELEASE/), or leave it unset to read them from data.voc_root.",
    "saliency_root": "Set data.saliency_root to the folder of saliency PNGs, or null to skip the I+S seeds.",
    "coco_root": "Set data.coco_root to the MS-COCO 2014 folder (train2014/, val2014/, annotations/).",
}
_WITHOUT_OOD = "or set data.ood_root to null to train without OoD images"


def _check_ood_files(data: dict) -> None:
    """A set data.ood_root must be a folder holding its list (data.ood_list): a mistyped one fails when the
    Snakefile is parsed, naming the key. Only these two paths are looked at; the images are the dataset check's."""
    root, list_file = Path(data["ood_root"]), Path(data["ood_root"]) / data["ood_list"]
    if not root.is_dir():
        raise ConfigError(
            f"invalid configuration at 'data.ood_root': the folder {root} does not exist. Set data.ood_root to the "
            f"folder of hard OoD images, {_WITHOUT_OOD}."
        )
    if not list_file.is_file():
        raise ConfigError(
            f"invalid configuration at 'data.ood_list': the file {list_file} does not exist. Write the OoD list there "
            f"(one image path per line, relative to data.ood_root) or set data.ood_list to its path relative to "
            f"data.ood_root, {_WITHOUT_OOD}."
        )


def _check_extra_files(data: dict) -> None:
    """Each set of data.extra must be a folder holding what lists its images (its list, or a VOC tree's Annotations/):
    a mistyped one fails when the Snakefile is parsed, naming the entry, as the OoD set does. The images are the
    dataset check's (wsss.data.extra)."""
    from wsss.data.extra import ExtraSet  # imported only for the user's sets: the default run never needs it

    for index, entry in enumerate(data["extra"]):
        key, extra = f"data.extra[{index}]", ExtraSet.of_config(entry)
        without = f"or remove {key} from data.extra to train without it"
        if not extra.root.is_dir():
            raise ConfigError(
                f"invalid configuration at '{key}.root': the folder {extra.root} does not exist. Set it to the folder "
                f"of extra images, {without}."
            )
        if not extra.index_path.exists():
            raise ConfigError(
                f"invalid configuration at '{key}.list': the file {extra.index_path} does not exist. Write the list "
                f"there (one `<image path relative to {key}.root> <class>[,<class>...]` per line; a VOC tree needs "
                f"Annotations/ and JPEGImages/ instead), or set {key}.list to its path relative to {key}.root, "
                f"{without}."
            )


def check_data_roots(config: dict) -> None:
    """With real data (voc, coco), raise a ConfigError unless every dataset folder the config names exists.

    Called when the Snakefile is parsed, so a mistyped root fails before any job with the key, the
    path and the fix. Not part of `prepare_config`: a VOC config stays loadable where the data is not.
    Relative roots are read from the working directory (Snakemake's --directory). The OoD folder and its list, and
    the extra image sets' folders and lists, are checked on every source (synthetic data may read the user's too).
    """
    data = config["data"]
    if data["ood_root"] is not None:
        _check_ood_files(data)
    if data["extra"]:
        _check_extra_files(data)
    if data["source"] == "synthetic":
        return
    for key, fix in _DATA_ROOT_FIXES.items():
        root = data[key]
        if root is not None and not Path(root).is_dir():
            raise ConfigError(f"invalid configuration at 'data.{key}': the folder {root} does not exist. {fix}")


def load_config(*paths: str | os.PathLike, overrides: Mapping | None = None) -> dict:
    """Read YAML config files in order (later ones win), merge `overrides`, validate; defaults to config.yaml."""
    paths = paths or (DEFAULT_CONFIG_PATH,)
    config: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found.") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc}).") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must hold a mapping of keys, got {type(loaded).__name__}.")
        config = deep_merge(config, loaded)
    if overrides:
        config = deep_merge(config, overrides)
    return prepare_config(config)
