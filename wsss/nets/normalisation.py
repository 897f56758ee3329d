"""Input normalisation: what a backbone's input must look like belongs to the weights it loads.

The official ICD code feeds `x - 127` on RGB 0..255 (`run_icd.py`), which suits the weights it loads,
DeepLab's Caffe-derived `vgg16_20M`. torchvision's ImageNet files (`vgg16-397923af.pth`,
`resnet101-63fe2227.pth`) expect RGB / 255 normalised by ImageNet's mean and std: fed `x - 127`, VGG16
would see inputs ~58x too large, and superpixel merging, ICD, the score maps and DeepLab would all be
wrong. So every step that runs a backbone (pretext pretraining, the premise measurement, superpixel
features, ICD training and score inference, the exported ICD backbone, DeepLab VGG16/ResNet101
training and prediction, the ResNet101 stand-in) takes its normalisation from here, decided by the
weights it starts from (`weights_normalisation`):

1. a file this project wrote records the normalisation it was trained with, and that record wins;
2. otherwise an explicit setting (`pretrain.normalisation`, `deeplab.normalisation.<backbone>`) says it;
3. otherwise the file's layout tells it: torchvision's key names, ImageNet classifier included, mean
   `torchvision`;
4. otherwise it is a ConfigError naming the key to set, raised when the Snakefile is parsed
   (`backbone_normalisations`), before any job runs.

How files record it. A weights file (a state dict) carries the name in the state dict's `_metadata`,
the attribute `nn.Module.state_dict()` attaches and `load_state_dict` reads per module (its root
entry gets `input_normalisation`), not as a key: a string among the tensors is no state dict, and
`load_state_dict(strict=True)`, torchvision's included, refuses unknown keys. `_metadata` survives
`torch.save`/`torch.load` (weights_only too) and every loader ignores the extra entry, so a file this
project writes in torchvision's layout (the ResNet101 stand-in) still loads wherever torchvision's
weights load. Training files (ICD and DeepLab `checkpoint.pt`/`model.pt`), dicts of entries anyway,
carry a top-level `normalisation` string (`wsss.core.checkpoints`).
"""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wsss.core.errors import ConfigError
from wsss.nets.weights_header import read_header

if TYPE_CHECKING:  # torch is imported where tensors are made: planning reads weights files without it
    import torch

# torchvision's ImageNet statistics (transforms.Normalize of its VGG16/ResNet101 recipes), on [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Caffe's VGG16 mean pixel in its BGR order, on 0..255 (DeepLab's vgg16_20M prototxt).
CAFFE_BGR_MEAN = (104.008, 116.669, 122.675)
# The entry of a state dict's root `_metadata` that records its normalisation.
METADATA_KEY = "input_normalisation"


@dataclass(frozen=True)
class Normalisation:
    """uint8 RGB images -> network input: channels reordered to `channels`, then `(x - mean) / std`.

    `mean` and `std` are per channel, in the network's channel order, on the 0..255 scale.
    """

    name: str
    channels: str  # "RGB" or "BGR": the order the network takes its channels in
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str

    def __call__(self, images) -> torch.Tensor:
        """uint8 N x H x W x 3 RGB (numpy or tensor) -> float32 N x 3 x H x W network input."""
        import torch

        if not isinstance(images, torch.Tensor):
            images = torch.from_numpy(
                np.array(images, dtype=np.uint8)
            )  # a writable copy: torch refuses read-only views
        x = images.permute(0, 3, 1, 2).float()
        if self.channels == "BGR":
            x = x.flip(1)
        return (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)

    @property
    def pad_rgb(self) -> tuple[int, int, int]:
        """The uint8 RGB colour this normalisation maps closest to zero: what padding must be, so padded pixels
        are zero input as in the official code (127 for `x - 127`) and in Caffe's zero-mean padding."""
        rgb_mean = self.mean[::-1] if self.channels == "BGR" else self.mean
        return tuple(int(np.clip(np.rint(value), 0, 255)) for value in rgb_mean)


NORMALISATIONS: dict[str, Normalisation] = {
    # Computed as (x - 255 m) / (255 s) on 0..255: algebraically ToTensor's x / 255 then Normalize(m, s), equal to
    # float32 rounding, and the exact arithmetic the ResNet101 stand-in has always been trained with.
    "torchvision": Normalisation(
        "torchvision",
        "RGB",
        tuple(255.0 * m for m in IMAGENET_MEAN),
        tuple(255.0 * s for s in IMAGENET_STD),
        "torchvision's ImageNet files (vgg16-397923af.pth, resnet101-63fe2227.pth): RGB / 255, minus mean "
        "(0.485, 0.456, 0.406), divided by std (0.229, 0.224, 0.225)",
    ),
    "caffe": Normalisation(
        "caffe",
        "BGR",
        CAFFE_BGR_MEAN,
        (1.0, 1.0, 1.0),
        "Caffe VGG16 converted to PyTorch (DeepLab's vgg16_20M): BGR on 0..255 minus (104.008, 116.669, 122.675), "
        "no scaling",
    ),
    "minus127": Normalisation(
        "minus127",
        "RGB",
        (127.0, 127.0, 127.0),
        (1.0, 1.0, 1.0),
        "the official ICD input (run_icd.py): RGB on 0..255 minus 127",
    ),
}
# The values of a normalisation setting: `auto` asks the weights file.
SETTINGS = ("auto", *NORMALISATIONS)
# What `auto` means for a backbone this pipeline trains from scratch, where no file can be asked: the input of
# the weights it stands in for. The pretext VGG16 stand-in takes the official ICD input, the ResNet101 stand-in
# torchvision's resnet101-63fe2227.pth's.
FROM_SCRATCH = {"vgg16": "minus127", "resnet101": "torchvision"}
# Key names that only torchvision's ImageNet files hold together (the classifier included: a converted file
# usually drops or renames it).
TORCHVISION_LAYOUTS = {
    "VGG16": ("features.0.weight", "features.28.weight", "classifier.0.weight", "classifier.6.weight"),
    "ResNet101": ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.2.conv3.weight", "fc.weight"),
}


def named(name: str, source: str = "the normalisation setting") -> Normalisation:
    """The normalisation called `name`; a ConfigError naming `source` for anything else."""
    try:
        return NORMALISATIONS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"{source}: unknown input normalisation {name!r}; choose one of {', '.join(NORMALISATIONS)}."
        ) from None


def from_scratch(setting: str, backbone: str) -> Normalisation:
    """The normalisation a backbone trained from scratch by this pipeline uses: `setting` unless `auto`."""
    return named(FROM_SCRATCH[backbone] if setting == "auto" else setting)


def load_weights_file(path: str | os.PathLike, name: str | None = None, *, mmap: bool = False) -> Mapping:
    """The dict of tensors a weights file holds, `_metadata` included, loaded `weights_only`.

    `mmap` maps the tensors instead of reading them (a look at the keys and record costs little even for a
    half-gigabyte file); files in the pre-1.6 format (torchvision's vgg16-397923af.pth) cannot be mapped
    and are read. A missing, unloadable or non-tensor file is a ConfigError saying what to save instead.
    """
    import torch

    name = name or str(path)
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as exc:
            if not (mmap and "mmap can only be used" in str(exc)):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(
            f"{name}: weights file not found. Check pretrain.weights / deeplab.weights (or rerun the "
            "step that writes it)."
        ) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{name}: not a loadable tensor state dict ({first}). Weights are loaded with "
            "weights_only=True, so files holding pickled Python objects are refused; save a plain "
            "dict of tensors (model.state_dict()) instead."
        ) from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{name}: expected a dict of parameter name -> tensor, got {type(state).__name__}. "
            "Save model.state_dict() (not a whole checkpoint or model object)."
        )
    return state


def with_record(state: Mapping[str, torch.Tensor], name: str) -> OrderedDict:
    """`state` as a state dict recording that its weights expect normalisation `name` (in `_metadata`)."""
    named(name)
    recorded = OrderedDict(state)
    metadata = getattr(state, "_metadata", None)
    recorded._metadata = OrderedDict((key, dict(value)) for key, value in (metadata or {}).items())
    recorded._metadata.setdefault("", {})[METADATA_KEY] = name
    return recorded


def recorded_normalisation(state: Mapping, source: str = "the weights") -> str | None:
    """The normalisation a weights file's state dict records, or None for a file that records none."""
    metadata = getattr(state, "_metadata", None) or {}
    name = metadata.get("", {}).get(METADATA_KEY)
    if name is None:
        return None
    return named(name, f"{source} (its recorded normalisation)").name


def layout_normalisation(state: Mapping) -> str | None:
    """`torchvision` for a state dict in one of torchvision's ImageNet layouts (TORCHVISION_LAYOUTS), else None."""
    return "torchvision" if any(all(key in state for key in keys) for keys in TORCHVISION_LAYOUTS.values()) else None


def weights_normalisation(weights: str | os.PathLike | Mapping, setting: str = "auto", *, key: str) -> Normalisation:
    """The input normalisation the weights at `weights` (a path, or a state dict) expect.

    The file's record if it has one (a `setting` naming another is a ConfigError: the weights were
    trained with their record); else `setting` unless it is `auto`; else the file's layout
    (torchvision's -> `torchvision`); else a ConfigError naming `key`, the setting to give.
    """
    if setting not in SETTINGS:
        raise ConfigError(f"invalid configuration at '{key}': {setting!r} is not one of {', '.join(SETTINGS)}.")
    source = "the given state dict" if isinstance(weights, Mapping) else str(weights)
    # A file's keys and record are read without torch where its format allows (wsss.nets.weights_header): planning
    # calls this for every user weights file, and the torch import alone costs seconds on a busy machine.
    state = weights if isinstance(weights, Mapping) else read_header(weights) or load_weights_file(weights, mmap=True)
    recorded = recorded_normalisation(state, source)
    if recorded is not None:
        if setting not in ("auto", recorded):
            raise ConfigError(
                f"invalid configuration at '{key}': {source} records that its weights were trained with the "
                f"{recorded} input normalisation, but {key} is {setting}. Set {key}: auto (or {recorded}); other "
                "input needs other weights."
            )
        return named(recorded)
    if setting != "auto":
        return named(setting)
    recognised = layout_normalisation(state)
    if recognised is not None:
        return named(recognised)
    raise ConfigError(
        f"invalid configuration at '{key}': cannot tell which input normalisation the weights {source} expect: they "
        "record none (the files this pipeline writes do) and are not in torchvision's layout (its VGG16/ResNet101 "
        f"key names with the ImageNet classifier). Set {key} to torchvision (RGB / 255, ImageNet mean and std), "
        "caffe (Caffe VGG16 converted to PyTorch, e.g. DeepLab's vgg16_20M: BGR minus (104.008, 116.669, 122.675)) "
        "or minus127 (RGB minus 127, the official ICD input)."
    )


def trained_normalisation(saved: Mapping, path) -> Normalisation:
    """The normalisation a training file (`checkpoint.pt`/`model.pt` of ICD or DeepLab) records."""
    if not isinstance(saved.get("normalisation"), str):
        raise ConfigError(
            f"{path}: records no input normalisation (written before the pipeline recorded it). "
            "Retrain it: delete the file and rerun its step."
        )
    return named(saved["normalisation"], f"{path} (its recorded normalisation)")


def _agreeing(name: str, setting: str, key: str, weights_key: str, source: str) -> str:
    """`name`, the normalisation of a file the pipeline makes; a ConfigError if an explicit `setting` differs."""
    if setting not in ("auto", name):
        raise ConfigError(
            f"invalid configuration at '{key}': it is {setting}, but {weights_key} is not set and "
            f"{source}, trained with the {name} input normalisation. {key} describes the file "
            f"{weights_key} names: set {key}: auto, or give that file."
        )
    return name


def _user_file(weights_key: str, path: str, setting: str, key: str) -> str:
    """The normalisation of a weights file the config names; a missing file fails naming `weights_key`."""
    if not Path(path).is_file():
        raise ConfigError(
            f"invalid configuration at '{weights_key}': the weights file {path} does not exist. "
            f"Set {weights_key} to the backbone weights file."
        )
    return weights_normalisation(path, setting, key=key).name


def backbone_normalisations(config: dict) -> dict:
    """The input normalisation of every backbone the configured pipeline runs, by name, decided from its weights.

    Called when the Snakefile is parsed, so a weights file of unknown normalisation (or a missing one)
    fails before any job, with the key to set. Returns {"icd": the ICD backbone's (pretext pretraining,
    premise, superpixels, ICD training, scores, the exported backbone), "deeplab": {backbone: DeepLab's}}
    for the configured DeepLab backbones. Files the pipeline writes itself are known before they exist:
    the pretext stand-in and the ResNet101 stand-in are trained with `from_scratch`, and the exported ICD
    backbone with the ICD backbone's normalisation.
    """
    pretrain = config["pretrain"]
    if pretrain["weights"]:
        icd = _user_file("pretrain.weights", pretrain["weights"], pretrain["normalisation"], "pretrain.normalisation")
    else:
        icd = from_scratch(pretrain["normalisation"], "vgg16").name
    deeplab = config["deeplab"]
    chosen = {}
    for backbone in deeplab["backbones"]:
        path, setting = deeplab["weights"][backbone], deeplab["normalisation"][backbone]
        key = f"deeplab.normalisation.{backbone}"
        if path:
            chosen[backbone] = _user_file(f"deeplab.weights.{backbone}", path, setting, key)
        elif backbone == "vgg16":  # the trained ICD backbone (init_from_icd) or the weights ICD started from
            source = (
                "DeepLab VGG16 starts from the trained ICD backbone"
                if deeplab["init_from_icd"]
                else "DeepLab VGG16 starts from the weights ICD starts from"
            )
            chosen[backbone] = _agreeing(icd, setting, key, "deeplab.weights.vgg16", source)
        else:  # the synthetic ResNet101 stand-in, trained from scratch (real data requires a file: deeplab.workflow)
            chosen[backbone] = from_scratch(setting, backbone).name
    return {"icd": icd, "deeplab": chosen}
