"""DeepLab VGG16 (output stride 8) with torchvision's parameter names, and strict weight loading.

The official ICD code uses DeepLab's "vgg16_20M": ImageNet VGG16 with pool4 at stride 1, dilated
conv5, an extra 3x3 average pool after pool5, and fc6/fc7 reduced to 1024-channel convolutions by
subsampling the fully connected layers. The conv part keeps torchvision's module indices, so a
torchvision ImageNet state dict loads without renaming; `width` scales every channel count so the
CPU pipeline runs the same code at a fraction of the cost.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from wsss.core.errors import ConfigError
from wsss.core.files import save_torch
from wsss.nets.normalisation import load_weights_file, with_record

# torchvision's VGG16 configuration ("D"): channel counts, "M" = max pool.
VGG16_CFG: tuple[int | str, ...] = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    "M",
)
FEATURE_KEYS: tuple[str, ...] = ("conv4", "conv5", "pool5", "fc6", "fc7_activation", "fc7")
IMAGENET_FC_CHANNELS = 4096
DEEPLAB_FC_CHANNELS = 1024


def default_device() -> torch.device:
    """The GPU when there is one (CUDA_VISIBLE_DEVICES picks which), else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def scaled(channels: int, width: float) -> int:
    """Channel count at a width multiplier: max(1, round(channels * width))."""
    return max(1, round(channels * width))


class UniformDropout(nn.Dropout):
    """Dropout whose mask is `uniform >= p` (kept values scaled by 1 / (1 - p)), not `bernoulli_(1 - p)`.

    The same distribution as nn.Dropout, from another random stream: PyTorch's CPU `bernoulli_` draws element
    by element (9 ms for ICD's fc6 output of a batch of 8 here, two of them a step), `rand` in vectorised
    blocks (4 ms with the compare and the product).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if self.p == 1:
            return x * 0
        return x * (torch.rand_like(x) >= self.p) * (1 / (1 - self.p))


class VGG16DeepLab(nn.Module):
    """VGG16 as DeepLab uses it: output stride 8, dilated conv5, fc6/fc7 as convolutions.

    `forward` returns a dict of feature maps (all after ReLU): `conv4` (conv4_3, stride 8),
    `conv5` (conv5_3, before pool5; the ICD feature), `pool5` (max then avg pool), `fc6`, `fc7`
    (after dropout, which is the identity in eval mode), `fc7_activation` (fc7 before dropout). The input must
    already be normalised by the caller, as the weights expect (`wsss.nets.normalisation`; the official code feeds
    `x - 127`).

    fc6 is a 3x3 conv with padding = dilation = `fc6_dilation` (1 for ICD's CAM branch, 12 for
    DeepLab-LargeFOV). The 3x3 average pool after pool5 counts padded zeros (divides by 9 at the
    border), as Caffe's and MXNet's average pooling do by default in the original models.
    """

    def __init__(
        self,
        width: float = 1.0,
        batch_norm: bool = False,
        fc_channels: int = DEEPLAB_FC_CHANNELS,
        fc6_dilation: int = 1,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"model.width must be positive, got {width}")
        if fc6_dilation < 1:
            raise ConfigError(f"fc6 dilation must be >= 1, got {fc6_dilation}")
        self.width = float(width)
        self.batch_norm = bool(batch_norm)
        self.fc_channels_base = int(fc_channels)
        self.fc6_dilation = int(fc6_dilation)

        layers: list[nn.Module] = []
        in_channels = 3
        pools_seen = 0
        self._conv4_index = self._conv5_index = -1
        for value in VGG16_CFG:
            if value == "M":
                pools_seen += 1
                if pools_seen <= 3:  # pool1-3: halve the resolution
                    layers.append(nn.MaxPool2d(3, stride=2, padding=1))
                else:  # pool4, pool5: keep stride 8
                    layers.append(nn.MaxPool2d(3, stride=1, padding=1))
                continue
            out_channels = scaled(value, width)
            dilation = 2 if pools_seen == 4 else 1  # conv5_x sit after pool4
            layers.append(nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out_channels))
            layers.append(nn.ReLU(inplace=True))
            in_channels = out_channels
            # The ReLU closing the last conv of blocks 4 and 5 gives conv4_3 and conv5_3.
            if pools_seen == 3:
                self._conv4_index = len(layers) - 1
            elif pools_seen == 4:
                self._conv5_index = len(layers) - 1
        self.features = nn.Sequential(*layers)
        self.pool5a = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=True)

        fc = scaled(fc_channels, width)
        self.fc6 = nn.Conv2d(in_channels, fc, 3, padding=fc6_dilation, dilation=fc6_dilation)
        self.fc7 = nn.Conv2d(fc, fc, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = UniformDropout(dropout)
        self.drop7 = UniformDropout(dropout)
        self.feature_channels: dict[str, int] = {
            "conv4": scaled(512, width),
            "conv5": in_channels,
            "pool5": in_channels,
            "fc6": fc,
            "fc7_activation": fc,
            "fc7": fc,
        }
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-normal (fan_out, ReLU) convs, zero biases, BN at identity: for training from scratch."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
                module.reset_running_stats()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == self._conv4_index:
                out["conv4"] = x  # the next layer (pool4) is out of place, so this stays intact
            elif index == self._conv5_index:
                out["conv5"] = x
        # pool5 is out of place, so out["conv5"] stays intact.
        x = self.pool5a(x)
        out["pool5"] = x
        x = self.drop6(self.relu(self.fc6(x)))
        out["fc6"] = x
        x = self.relu(self.fc7(x))
        out["fc7_activation"] = x  # before dropout: what a pooled feature of the image is taken from
        out["fc7"] = self.drop7(x)
        return out


# ---------------------------------------------------------------------------------------------
# Weight loading


def read_state_dict(path_or_state_dict, source_name: str | None) -> tuple[dict, str]:
    """(dict of tensors, name for messages) from a weights file (weights_only) or a state dict.

    A missing, unloadable or non-tensor file is a ConfigError saying what to save instead
    (`wsss.nets.normalisation.load_weights_file`).
    """
    if isinstance(path_or_state_dict, Mapping):
        return dict(path_or_state_dict), source_name or "<in-memory state dict>"
    name = source_name or str(path_or_state_dict)
    return dict(load_weights_file(path_or_state_dict, name)), name


def _describe_source(state: dict) -> str:
    """What model settings a state dict was saved with, as far as its shapes tell."""
    parts = []
    first = state.get("features.0.weight")
    if isinstance(first, torch.Tensor) and first.ndim == 4:
        parts.append(f"width {first.shape[0] / 64:g}")
    parts.append(f"batch_norm {'true' if 'features.1.running_mean' in state else 'false'}")
    if isinstance(state.get("fc6.weight"), torch.Tensor):
        parts.append(f"{state['fc6.weight'].shape[0]} fc channels")
    return ", ".join(parts)


def _from_torchvision(state: dict, name: str) -> dict:
    """ImageNet VGG16(-BN) -> DeepLab fc6/fc7 by subsampling, as DeepLab built vgg16_20M."""
    step = IMAGENET_FC_CHANNELS // DEEPLAB_FC_CHANNELS  # keep every 4th output unit
    expected = {
        "classifier.0.weight": (IMAGENET_FC_CHANNELS, 512 * 7 * 7),
        "classifier.0.bias": (IMAGENET_FC_CHANNELS,),
        "classifier.3.weight": (IMAGENET_FC_CHANNELS, IMAGENET_FC_CHANNELS),
        "classifier.3.bias": (IMAGENET_FC_CHANNELS,),
    }
    for key, shape in expected.items():
        found = state.get(key)
        if found is None or tuple(found.shape) != shape:
            got = "missing" if found is None else f"found {tuple(found.shape)}"
            raise ConfigError(
                f"{name}: looks like a torchvision VGG16 state dict but {key} is {got}, expected "
                f"{shape}. Only the full-width ImageNet VGG16/VGG16-BN layout can be converted."
            )
    out = {k: v for k, v in state.items() if k.startswith("features.")}
    fc6 = state["classifier.0.weight"].reshape(IMAGENET_FC_CHANNELS, 512, 7, 7)
    out["fc6.weight"] = fc6[::step, :, ::3, ::3].contiguous()  # 7x7 taps 0, 3, 6 -> 3x3
    out["fc6.bias"] = state["classifier.0.bias"][::step].contiguous()
    fc7 = state["classifier.3.weight"][::step, ::step]
    out["fc7.weight"] = fc7.reshape(*fc7.shape, 1, 1).contiguous()
    out["fc7.bias"] = state["classifier.3.bias"][::step].contiguous()
    # classifier.6 (the 1000-way ImageNet classifier) is dropped on purpose.
    unexpected = sorted(k for k in state if k not in out and not k.startswith("classifier."))
    for key in unexpected:
        out[key] = state[key]  # reported as unexpected by the strict check
    return out


def load_vgg16_weights(model: VGG16DeepLab, path_or_state_dict, *, source_name: str | None = None) -> None:
    """Load ImageNet (torchvision) or DeepLab-format VGG16 weights into `model`, strictly.

    Accepts a path (read with `weights_only=True`) or a state dict. A torchvision VGG16/VGG16-BN
    dict (`features.*`, `classifier.{0,3,6}.*`) gets DeepLab's fc6/fc7: `classifier.0` viewed as
    4096x512x7x7 keeping every 4th output and taps 0,3,6, `classifier.3` subsampled [::4, ::4];
    the 1000-way `classifier.6` is dropped. A DeepLab-format dict (`features.*`, `fc6.*`,
    `fc7.*`, e.g. from our pretraining) is loaded as is. Missing BatchNorm `num_batches_tracked`
    counters (absent from old torchvision files) are filled with 0. Any other missing or
    unexpected key or wrong shape raises `ConfigError`: nothing is loaded partially.
    """
    state, name = read_state_dict(path_or_state_dict, source_name)
    is_torchvision = any(k.startswith("classifier.") for k in state)
    if is_torchvision:
        if not model.width == 1.0:
            raise ConfigError(
                f"{name}: ImageNet VGG16 weights exist only at full width but the model has width "
                f"{model.width:g}. Set model.width: 1.0 to load ImageNet weights."
            )
        state = _from_torchvision(state, name)
    elif "fc6.weight" not in state:
        raise ConfigError(
            f"{name}: neither a torchvision VGG16 state dict (classifier.* keys) nor a DeepLab-format "
            "one (fc6.*/fc7.* keys). Point pretrain.weights (or deeplab.weights.vgg16) at a VGG16 weights file."
        )

    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        lines = []
        for key in wrong[:5]:
            lines.append(f"  {key}: expected {tuple(expected[key].shape)}, found {tuple(state[key].shape)}")
        for key in missing[:5]:
            lines.append(f"  {key}: expected {tuple(expected[key].shape)}, missing from the file")
        for key in unexpected[:5]:
            lines.append(f"  {key}: unexpected in the file (shape {tuple(state[key].shape)})")
        model_desc = (
            f"width {model.width:g}, batch_norm {'true' if model.batch_norm else 'false'}, "
            f"{model.feature_channels['fc6']} fc channels"
        )
        raise ConfigError(
            f"{name}: weights do not fit the model ({len(wrong)} wrong shapes, {len(missing)} missing, "
            f"{len(unexpected)} unexpected keys):\n" + "\n".join(lines) + "\n"
            f"The model has {model_desc}; the file looks like {_describe_source(state)}. Set "
            "model.width / model.batch_norm to the values the weights were trained with (ImageNet "
            "weights need model.width: 1.0), or retrain them."
        )
    model.load_state_dict(state, strict=True)


def save_backbone(model: VGG16DeepLab, path: str | os.PathLike, normalisation: str) -> None:
    """Save the backbone's DeepLab-format state dict atomically (loadable by load_vgg16_weights), recording
    the input `normalisation` its weights were trained with (`wsss.nets.normalisation.with_record`)."""
    state = model.state_dict()
    copied = OrderedDict((key, value.detach().cpu().clone()) for key, value in state.items())
    copied._metadata = state._metadata
    save_torch(with_record(copied, normalisation), path)
