"""Input normalisation belongs to the weights file (wsss.nets.normalisation).

Against an independent reference: torchvision's documented preprocessing (ToTensor, then Normalize with
ImageNet's mean and std), written out here, on a real photograph, into VGG16 feature layers and a ResNet
stem + layer1 + layer2 written here with torchvision's module names, must give what the project's own
path gives from the same torchvision-layout file: its weights loading (fc6/fc7 subsampling included)
and the normalisation it decides from the file. Then: recognition of each layout, the explicit setting,
the clear error, padding that is zero input, the records in the files the project writes, and the
workflow giving every backbone-running step its weights' normalisation, or stopping at parse time.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from collections import Counter, OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from skimage.data import chelsea
from torch import nn

from benchmarks.dryrun import torchvision_keys
from deeplab.model import DeepLabResNet101, load_imagenet_weights
from icd.superpixels import backbone_dense_features
from tests.conftest import make_voc_tree
from tests.scenarios import voc_scenario
from tests.torchvision_layouts import resnet101_torchvision_shapes
from tests.workflow_helpers import snakemake
from wsss.core.checkpoints import save_checkpoint, save_trained
from wsss.core.config import PROJECT_ROOT, SCHEMA_PATH, load_config
from wsss.core.errors import ConfigError
from wsss.data.classes import NUM_CLASSES
from wsss.nets.backbones import VGG16DeepLab, load_vgg16_weights, save_backbone
from wsss.nets.normalisation import (
    NORMALISATIONS,
    SETTINGS,
    backbone_normalisations,
    named,
    recorded_normalisation,
    trained_normalisation,
    weights_normalisation,
    with_record,
)
from wsss.nets.weights_header import read_header

# torchvision's documented ImageNet preprocessing (transforms.Normalize arguments).
TORCHVISION_MEAN = [0.485, 0.456, 0.406]
TORCHVISION_STD = [0.229, 0.224, 0.225]
KEY = "pretrain.normalisation"


def torchvision_preprocess(rgb: np.ndarray) -> torch.Tensor:
    """transforms.ToTensor (HWC uint8 -> CHW float in [0, 1]) then transforms.Normalize(mean, std), batched."""
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float() / 255.0
    x = (x - torch.tensor(TORCHVISION_MEAN).view(3, 1, 1)) / torch.tensor(TORCHVISION_STD).view(3, 1, 1)
    return x[None]


def photograph() -> np.ndarray:
    """A real photograph: scikit-image's chelsea (300 x 451), its central 300 x 300 square (no padding needed)."""
    return np.ascontiguousarray(chelsea()[:, 75:375])


def he_normal(generator: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """Random conv/linear weights whose activations keep their scale through many layers."""
    fan_in = int(np.prod(shape[1:]))
    return torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5


def relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    """max |found - expected| over max |expected|: the error on the scale of the feature map."""
    return float((found - expected).abs().max() / expected.abs().max())


# ---------------------------------------------------------------------------------------------
# The reference: VGG16 and ResNet written here, fed torchvision's preprocessing


def reference_vgg16_features() -> nn.Module:
    """torchvision's vgg16 `features` (same module indices: conv at 0, 2, 5, ...; ReLU after each; max pools at
    4, 9, 16, 23, 30) with the DeepLab geometry of the official `vgg16_deeplab`: pools 1-3 3x3 stride 2 pad 1,
    pool4 3x3 stride 1 pad 1, conv5_x dilation 2 pad 2. Up to conv5_3's ReLU (index 29), what ICD uses."""
    layers, channels = [], 3
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    pools = 0
    for value in plan:
        if value == "M":
            pools += 1
            layers.append(nn.MaxPool2d(3, stride=2 if pools <= 3 else 1, padding=1))
            continue
        dilation = 2 if pools == 4 else 1
        layers += [nn.Conv2d(channels, value, 3, padding=dilation, dilation=dilation), nn.ReLU()]
        channels = value
    container = nn.Module()
    container.features = nn.Sequential(*layers)
    return container


def torchvision_vgg16_state(features: nn.Module, seed: int = 0) -> OrderedDict:
    """A torchvision vgg16 state dict (features and the ImageNet classifier) with random values."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, value in features.state_dict().items():
        state[key] = (
            he_normal(generator, value.shape)
            if key.endswith("weight")
            else 0.1 * torch.randn(value.shape, generator=generator)
        )
    for index, shape in ((0, (4096, 25088)), (3, (4096, 4096)), (6, (1000, 4096))):
        state[f"classifier.{index}.weight"] = he_normal(generator, shape)
        state[f"classifier.{index}.bias"] = 0.1 * torch.randn(shape[0], generator=generator)
    return state


class ReferenceBottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3x3 conv), eval-mode BatchNorm."""

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_channels, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = nn.Conv2d(planes, 4 * planes, 1, bias=False), nn.BatchNorm2d(4 * planes)
        self.downsample = None
        if stride != 1 or in_channels != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, 4 * planes, 1, stride=stride, bias=False), nn.BatchNorm2d(4 * planes)
            )

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + identity)


class ReferenceResNetToLayer2(nn.Module):
    """torchvision resnet101 up to layer2 (its geometry: 7x7/2 stem, 3x3/2 max pool, layer2 strided): output
    stride 8, where DeepLab's network, whose layer3/4 are dilated instead of strided, still agrees."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(
            ReferenceBottleneck(64, 64, 1), *(ReferenceBottleneck(256, 64, 1) for _ in range(2))
        )
        self.layer2 = nn.Sequential(
            ReferenceBottleneck(256, 128, 2), *(ReferenceBottleneck(512, 128, 1) for _ in range(3))
        )

    def forward(self, x):
        return self.layer2(self.layer1(self.maxpool(torch.relu(self.bn1(self.conv1(x))))))


def torchvision_resnet101_state(seed: int = 0) -> OrderedDict:
    """A torchvision resnet101 state dict (as resnet101-63fe2227.pth: no BatchNorm counters) with random values."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for key, shape in resnet101_torchvision_shapes().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) == 1:  # BatchNorm weight
            state[key] = 0.5 + torch.rand(shape, generator=generator)
        else:
            state[key] = he_normal(generator, shape)
    return state


class _Stop(Exception):
    """Carries layer2's output out of the project's full forward, sparing layer3 and layer4."""


def test_vgg16_conv5_3_from_a_torchvision_file_matches_torchvision_preprocessing(tmp_path, capsys):
    reference = reference_vgg16_features().eval()
    state = torchvision_vgg16_state(reference)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    reference.load_state_dict({key: value for key, value in state.items() if key.startswith("features.")})
    image = photograph()
    with torch.no_grad():
        expected = reference.features[:30](torchvision_preprocess(image))[0]
    del state

    # The project's path from the file, as the superpixel step takes it: the normalisation the file implies,
    # the strict loading with fc6/fc7 subsampling, the step's own feature function.
    normalise = weights_normalisation(path, "auto", key=KEY)
    assert normalise.name == "torchvision"
    model = VGG16DeepLab(width=1.0, batch_norm=False)
    load_vgg16_weights(model, path)
    found = torch.from_numpy(backbone_dense_features(model.eval(), image, image.shape[0], normalise))
    assert found.shape == expected.shape == (512, 38, 38)
    assert expected.abs().max() > 0.1 and (expected > 0).float().mean() > 0.1  # a live, not a dead, map
    error = relative_error(found, expected)
    with capsys.disabled():
        print(f"\nVGG16 conv5_3 vs torchvision preprocessing: max relative error {error:.2e}")
    assert error < 1e-4
    # x - 127, the normalisation this project used for every file, is far off on torchvision's weights.
    wrong = torch.from_numpy(backbone_dense_features(model, image, image.shape[0], named("minus127")))
    assert relative_error(wrong, expected) > 1.0


def test_resnet101_layer2_from_a_torchvision_file_matches_torchvision_preprocessing(tmp_path, capsys):
    state = torchvision_resnet101_state()
    path = tmp_path / "resnet101-63fe2227.pth"
    torch.save(state, path)
    reference = ReferenceResNetToLayer2().eval()
    missing, unexpected = reference.load_state_dict(
        {key: value for key, value in state.items() if key.split(".")[0] in ("conv1", "bn1", "layer1", "layer2")},
        strict=False,
    )
    assert not unexpected and all(key.endswith("num_batches_tracked") for key in missing)  # as in torchvision's file
    image = photograph()
    with torch.no_grad():
        expected = reference(torchvision_preprocess(image))[0]
    del state

    normalise = weights_normalisation(path, "auto", key="deeplab.normalisation.resnet101")
    assert normalise.name == "torchvision"
    model = DeepLabResNet101(width=1.0, num_classes=NUM_CLASSES)
    load_imagenet_weights(model, path)

    def stop(module, inputs, output):
        raise _Stop(output)

    model.backbone.layer2.register_forward_hook(stop)
    with torch.no_grad(), pytest.raises(_Stop) as stopped:
        model.eval()(normalise(image[None]))
    found = stopped.value.args[0][0]
    assert found.shape == expected.shape == (512, 38, 38)
    assert expected.abs().max() > 0.1 and (expected > 0).float().mean() > 0.1
    error = relative_error(found, expected)
    with capsys.disabled():
        print(f"\nResNet101 layer2 vs torchvision preprocessing: max relative error {error:.2e}")
    assert error < 1e-4


# ---------------------------------------------------------------------------------------------
# The normalisations themselves


def test_each_normalisation_is_its_documented_formula():
    image = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(image).permute(0, 3, 1, 2).double()
    expected = {
        "torchvision": torch.cat([torchvision_preprocess(rgb) for rgb in image]).double(),
        "caffe": x.flip(1) - torch.tensor([104.008, 116.669, 122.675], dtype=torch.float64).view(1, 3, 1, 1),
        "minus127": x - 127,
    }
    assert set(NORMALISATIONS) == set(expected) and ("auto", *expected) == SETTINGS
    for name, normalise in NORMALISATIONS.items():
        found = normalise(image)
        assert found.dtype == torch.float32 and found.shape == (2, 3, 5, 7)
        torch.testing.assert_close(found.double(), expected[name], rtol=1e-6, atol=1e-5, msg=name)


def test_the_pad_colour_of_each_normalisation_is_zero_input():
    assert {name: n.pad_rgb for name, n in NORMALISATIONS.items()} == {
        "torchvision": (124, 116, 104),  # round(255 * mean)
        "caffe": (123, 117, 104),  # the BGR means (104.008, 116.669, 122.675) reversed to RGB
        "minus127": (127, 127, 127),
    }
    every_value = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)[None, None]  # 1 x 1 x 256 x 3
    for name, normalise in NORMALISATIONS.items():
        padded = normalise(np.full((1, 2, 2, 3), normalise.pad_rgb, np.uint8))[0, :, 0, 0]
        closest = normalise(every_value)[0, :, 0].abs().argmin(dim=1)  # per network channel, the value nearest zero
        channels = closest.flip(0) if normalise.channels == "BGR" else closest
        assert tuple(channels.tolist()) == normalise.pad_rgb, name
        assert (padded.abs() <= 0.5 / torch.tensor(normalise.std)).all(), name


# ---------------------------------------------------------------------------------------------
# Deciding a file's normalisation


def _save(path: Path, keys, record: str | None = None) -> Path:
    state = {key: torch.zeros(1) for key in keys}
    torch.save(with_record(state, record) if record else state, path)
    return path


DEEPLAB_LAYOUT = ["features.0.weight", "features.0.bias", "fc6.weight", "fc6.bias", "fc7.weight", "fc7.bias"]


def test_each_layout_is_recognised_and_an_explicit_setting_wins_over_the_layout(tmp_path):
    vgg = _save(tmp_path / "vgg16.pth", torchvision_keys("vgg16"))
    resnet = _save(tmp_path / "resnet101.pth", torchvision_keys("resnet101"))
    legacy = tmp_path / "legacy.pth"  # torchvision's own files predate the zip format: no mmap, read instead
    torch.save({key: torch.zeros(1) for key in torchvision_keys("vgg16")}, legacy, _use_new_zipfile_serialization=False)
    for path in (vgg, resnet, legacy):
        assert weights_normalisation(path, key=KEY).name == "torchvision"
        # e.g. a Caffe VGG16 renamed to torchvision's keys: the layout cannot tell, the setting says it.
        assert weights_normalisation(path, "caffe", key=KEY).name == "caffe"
    deeplab_layout = _save(tmp_path / "vgg16_20M.pth", DEEPLAB_LAYOUT)
    assert weights_normalisation(deeplab_layout, "caffe", key=KEY).name == "caffe"
    assert weights_normalisation(deeplab_layout, "minus127", key=KEY).name == "minus127"


@pytest.mark.parametrize(
    "keys",
    [
        DEEPLAB_LAYOUT,
        [k for k in torchvision_keys("vgg16") if "classifier" not in k],
        [k for k in torchvision_keys("resnet101") if not k.startswith("fc.")],
    ],
    ids=["deeplab layout", "vgg16 without classifier", "resnet101 without fc"],
)
def test_an_unknown_layout_without_a_setting_is_a_clear_error_naming_the_key(tmp_path, keys):
    path = _save(tmp_path / "weights.pth", keys)
    with pytest.raises(ConfigError) as error:
        weights_normalisation(path, key="deeplab.normalisation.vgg16")
    message = str(error.value)
    assert message.startswith("invalid configuration at 'deeplab.normalisation.vgg16': cannot tell")
    assert str(path) in message and all(name in message for name in ("torchvision", "caffe", "minus127"))


def test_a_record_wins_and_an_explicit_setting_cannot_contradict_it(tmp_path):
    path = _save(tmp_path / "w.pth", torchvision_keys("vgg16"), record="caffe")  # a torchvision layout, recorded
    assert weights_normalisation(path, key=KEY).name == "caffe"
    assert weights_normalisation(path, "caffe", key=KEY).name == "caffe"
    with pytest.raises(
        ConfigError,
        match=r"records that its weights were trained with the caffe input normalisation, "
        r"but pretrain.normalisation is torchvision\. Set pretrain.normalisation: auto",
    ):
        weights_normalisation(path, "torchvision", key=KEY)
    with pytest.raises(ConfigError, match="weights file not found"):
        weights_normalisation(tmp_path / "missing.pth", key=KEY)
    (tmp_path / "empty.pth").touch()
    with pytest.raises(ConfigError, match="not a loadable tensor state dict"):
        weights_normalisation(tmp_path / "empty.pth", key=KEY)


# ---------------------------------------------------------------------------------------------
# The files the project writes record their normalisation


@pytest.mark.parametrize("name", list(NORMALISATIONS))
def test_the_record_round_trips_through_backbone_files_and_stays_invisible_to_strict_loading(tmp_path, name):
    source = VGG16DeepLab(width=0.0625)
    save_backbone(source, tmp_path / "backbone.pth", name)  # the pretext stand-in, the exported ICD backbone
    assert weights_normalisation(tmp_path / "backbone.pth", key=KEY).name == name
    loaded = VGG16DeepLab(width=0.0625)
    load_vgg16_weights(loaded, tmp_path / "backbone.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in source.state_dict().items())
    # A torchvision-layout file the project writes (the ResNet101 stand-in) loads where torchvision's load:
    # a plain strict load_state_dict of a module with torchvision's names, no extra key.
    reference = ReferenceResNetToLayer2()
    torch.save(with_record(reference.state_dict(), name), tmp_path / "tv.pth")
    state = torch.load(tmp_path / "tv.pth", weights_only=True)
    assert set(state) == set(reference.state_dict()) and recorded_normalisation(state) == name
    ReferenceResNetToLayer2().load_state_dict(state, strict=True)


def test_training_files_record_their_normalisation(tmp_path):
    from deeplab.infer import load_trained
    from deeplab.model import build_model
    from deeplab.train import network_options

    network = network_options("resnet101", {**load_config()["deeplab"], "width": 0.0625}, {})
    net = build_model(num_classes=21, **{k: network[k] for k in ("backbone", "head", "width", "batch_norm")})
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    save_checkpoint(tmp_path / "checkpoint.pt", net, optimizer, 0, [], "run", {}, "caffe")
    save_trained(tmp_path, net, [], "run", {}, "caffe", network=json.dumps(network))
    for file in ("checkpoint.pt", "model.pt"):
        saved = torch.load(tmp_path / file, weights_only=True)
        assert trained_normalisation(saved, file).name == "caffe"
    assert load_trained(tmp_path / "model.pt", torch.device("cpu"))[1].name == "caffe"  # what prediction feeds
    saved = torch.load(tmp_path / "model.pt", weights_only=True)
    del saved["normalisation"]
    torch.save(saved, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="old.pt: records no input normalisation .* Retrain it"):
        load_trained(tmp_path / "old.pt", torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# The plan the Snakefile takes when it is parsed


def _config(**overrides) -> dict:
    return load_config(overrides=overrides)


def test_the_synthetic_default_keeps_the_official_input_and_the_resnet_stand_in_torchvision():
    assert backbone_normalisations(_config()) == {
        "icd": "minus127",
        "deeplab": {"vgg16": "minus127", "resnet101": "torchvision"},
    }
    # an explicit setting trains the pretext stand-in on it; DeepLab VGG16, started from ICD, follows
    plan = backbone_normalisations(_config(pretrain={"normalisation": "torchvision"}))
    assert plan == {"icd": "torchvision", "deeplab": {"vgg16": "torchvision", "resnet101": "torchvision"}}
    with pytest.raises(
        ConfigError,
        match=r"'deeplab.normalisation.vgg16': it is caffe, but deeplab.weights.vgg16 is "
        r"not set and DeepLab VGG16 starts from the trained ICD backbone, trained "
        r"with the minus127 input normalisation",
    ):
        backbone_normalisations(_config(deeplab={"normalisation": {"vgg16": "caffe"}}))


def test_real_data_takes_each_files_normalisation_and_a_missing_file_names_its_key(tmp_path):
    vgg = _save(tmp_path / "vgg16.pth", torchvision_keys("vgg16"))
    resnet = _save(tmp_path / "resnet101.pth", torchvision_keys("resnet101"))
    caffe = _save(tmp_path / "vgg16_20M.pth", DEEPLAB_LAYOUT)
    voc = {
        "data": {"source": "voc", "voc_root": str(tmp_path)},
        "pretrain": {"weights": str(vgg)},
        "deeplab": {"weights": {"resnet101": str(resnet)}},
    }
    assert backbone_normalisations(_config(**voc)) == {
        "icd": "torchvision",
        "deeplab": {"vgg16": "torchvision", "resnet101": "torchvision"},
    }
    voc["deeplab"] = {"weights": {"vgg16": str(caffe), "resnet101": str(resnet)}, "normalisation": {"vgg16": "caffe"}}
    assert backbone_normalisations(_config(**voc))["deeplab"] == {"vgg16": "caffe", "resnet101": "torchvision"}
    voc["pretrain"] = {"weights": str(tmp_path / "nowhere.pth")}
    with pytest.raises(ConfigError, match=r"'pretrain.weights': the weights file .*nowhere.pth does not exist"):
        backbone_normalisations(_config(**voc))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip format", "pre-1.6 format"])
@pytest.mark.parametrize("record", [None, "caffe"])
def test_the_header_reader_gives_torch_loads_keys_and_record_without_reading_a_tensor(tmp_path, zip_format, record):
    state = OrderedDict((key, torch.randn(2, 3)) for key in torchvision_keys("vgg16"))
    state["layer.num_batches_tracked"] = torch.tensor(7)  # int64, 0-dimensional
    state["half"] = torch.zeros(4, dtype=torch.float16)
    path = tmp_path / "weights.pth"
    torch.save(with_record(state, record) if record else state, path, _use_new_zipfile_serialization=zip_format)
    loaded = torch.load(path, weights_only=True)
    header = read_header(path)
    assert list(header) == list(loaded)
    assert getattr(header, "_metadata", None) == getattr(loaded, "_metadata", None)
    assert recorded_normalisation(header) == record
    # a module's own state dict carries per-module _metadata (versions): read the same way
    torch.save(nn.BatchNorm2d(3).state_dict(), path, _use_new_zipfile_serialization=zip_format)
    assert read_header(path)._metadata == torch.load(path, weights_only=True)._metadata


@pytest.mark.parametrize("content", ["not a dict of tensors", "a pickled object", "a module", "garbage", "missing"])
def test_the_header_reader_declines_anything_but_a_plain_state_dict(tmp_path, content):
    path = tmp_path / "weights.pth"
    if content == "not a dict of tensors":
        torch.save({"weight": torch.zeros(1), "epoch": 3}, path)
    elif content == "a pickled object":
        torch.save({"weight": torch.zeros(1), "counts": Counter(a=1)}, path)
    elif content == "a module":
        torch.save(nn.Linear(2, 2), path)
    elif content == "garbage":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    assert read_header(path) is None
    # and the caller's fallback, torch.load(weights_only=True), says what is wrong (or loads the plain dict)
    if content in ("a pickled object", "a module", "garbage", "missing"):
        with pytest.raises(ConfigError, match="weights"):
            weights_normalisation(path, key=KEY)


def test_planning_reads_the_weights_files_without_importing_torch(tmp_path):
    """backbone_normalisations runs when the Snakefile is parsed: the torch import alone costs seconds there."""
    vgg = tmp_path / "vgg16.pth"
    torch.save({key: torch.zeros(1) for key in torchvision_keys("vgg16")}, vgg, _use_new_zipfile_serialization=False)
    resnet = _save(tmp_path / "resnet101.pth", torchvision_keys("resnet101"))
    caffe = _save(tmp_path / "vgg16_20M.pth", DEEPLAB_LAYOUT, record="caffe")
    overrides = {
        "data": {"source": "voc", "voc_root": str(tmp_path)},
        "pretrain": {"weights": str(vgg)},
        "deeplab": {"weights": {"vgg16": str(caffe), "resnet101": str(resnet)}},
    }
    script = (
        "import json, sys\n"
        "from wsss.core.config import load_config\n"
        "from wsss.nets.normalisation import backbone_normalisations\n"
        f"plan = backbone_normalisations(load_config(overrides={overrides!r}))\n"
        "print(json.dumps({'plan': plan, 'torch': 'torch' in sys.modules}))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "plan": {"icd": "torchvision", "deeplab": {"vgg16": "caffe", "resnet101": "torchvision"}},
        "torch": False,
    }


def test_the_schema_offers_exactly_the_settings():
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    assert tuple(schema["$defs"]["normalisation"]["enum"]) == SETTINGS
    for section in ("model", "icd"):
        assert not {"input_mean", "input_scale", "pad_value"} & set(schema["properties"][section]["properties"])


# ---------------------------------------------------------------------------------------------
# The workflow


def _voc_workdir(tmp_path: Path, weights_keys) -> tuple[Path, dict]:
    """The VOC scenario (tests/scenarios/voc.yaml) with both DeepLab backbones, over a hand-made VOC tree and weights
    files."""
    root = make_voc_tree(tmp_path / "data" / "VOC2012")
    _save(tmp_path / "data" / "vgg16.pth", weights_keys)
    _save(tmp_path / "data" / "resnet101.pth", torchvision_keys("resnet101"))
    config = voc_scenario(root, tmp_path / "data" / "vgg16.pth")
    config["deeplab"].update(
        backbones=["vgg16", "resnet101"], weights={"resnet101": str(tmp_path / "data" / "resnet101.pth")}
    )
    return tmp_path, config


# The steps that run a backbone from a weights file or an ICD model, with the normalisation in their options.
# (`deeplab predict-deeplab` runs the DeepLab model with the normalisation that model.pt records, from its training.)
FROM_WEIGHTS = {
    "icd superpixels",
    "icd measure-premise",
    "icd train-icd",
    "icd infer-scores",
    "icd export-icd-backbone",
    "deeplab train-deeplab",
}


@pytest.mark.slow
def test_a_torchvision_file_gives_every_backbone_step_the_torchvision_input(tmp_path):
    workdir, config = _voc_workdir(tmp_path, torchvision_keys("vgg16"))
    result = snakemake(workdir, "-n", "-p", config=config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    steps = {}
    for line in result.stdout.splitlines():
        if not line.startswith("Shell command: "):
            continue
        words = shlex.split(line.removeprefix("Shell command: "))
        if " ".join(words[:2]) in FROM_WEIGHTS:
            options = json.loads(words[words.index("--options") + 1])
            backbone = words[words.index("--backbone") + 1] if "--backbone" in words else ""
            steps.setdefault(f"{words[0]} {words[1]} {backbone}".strip(), []).append(options.get("normalisation"))
    # superpixel features, both ICD networks and their score maps, DeepLab VGG16 and ResNet101 on every seed set
    assert set(steps) == {
        "icd superpixels",
        "icd train-icd",
        "icd infer-scores",
        "deeplab train-deeplab vgg16",
        "deeplab train-deeplab resnet101",
    }, steps
    assert {step: set(values) for step, values in steps.items()} == {step: {"torchvision"} for step in steps}
    assert len(steps["icd train-icd"]) == 2 and len(steps["deeplab train-deeplab resnet101"]) == 2  # icd_crf and gt
    assert not (workdir / "results").exists()


@pytest.mark.slow
def test_an_unrecognisable_weights_file_stops_the_workflow_at_parse_time_naming_the_key(tmp_path):
    workdir, config = _voc_workdir(tmp_path, DEEPLAB_LAYOUT)
    result = snakemake(workdir, "-n", config=config)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "invalid configuration at 'pretrain.normalisation': cannot tell which input normalisation" in output
    assert "Set pretrain.normalisation to torchvision" in output and "Traceback" not in output
    assert "Job stats" not in output and not (workdir / "results").exists()
    config["pretrain"]["normalisation"] = "caffe"  # stating it lets the run go on, with that input everywhere
    result = snakemake(workdir, "-n", "-p", config=config)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert '"normalisation": "caffe"' in result.stdout
