"""torchvision's ImageNet weight layouts written out by hand, to check the project's networks and weight loading
against (tests/test_deeplab_model.py, tests/test_deeplab_classifier.py, tests/test_normalisation.py)."""

from __future__ import annotations

RESNET101_STAGES = [(3, 64, 1), (4, 128, 2), (23, 256, 1), (3, 512, 1)]  # blocks, planes, first stride


def resnet101_torchvision_shapes() -> dict[str, tuple[int, ...]]:
    """torchvision resnet101's state dict keys and shapes, written out from the architecture by hand."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, channels: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (channels,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    in_channels = 64
    for layer, (blocks, planes, _) in enumerate(RESNET101_STAGES, start=1):
        for block in range(blocks):
            prefix = f"layer{layer}.{block}"
            shapes[f"{prefix}.conv1.weight"] = (planes, in_channels, 1, 1)
            bn(f"{prefix}.bn1", planes)
            shapes[f"{prefix}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{prefix}.bn2", planes)
            shapes[f"{prefix}.conv3.weight"] = (4 * planes, planes, 1, 1)
            bn(f"{prefix}.bn3", 4 * planes)
            if block == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (4 * planes, in_channels, 1, 1)
                bn(f"{prefix}.downsample.1", 4 * planes)
            in_channels = 4 * planes
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes
