"""Architectures by name: `--arch NAME` -> a constructor."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bsnn.errors import ConfigError
from bsnn.models.vgg import VGG


@dataclass(frozen=True)
class Arch:
    """An architecture: blocks of conv widths, the hidden width of the classifier, and where
    and how each block pools (one of `bsnn.models.vgg.POOLINGS`)."""

    blocks: tuple[tuple[int, ...], ...]
    hidden: int
    description: str
    ceil_from: int = 2
    pooling: str = "avg-before-relu"

    def build(
        self,
        num_classes: int,
        input_shape: tuple[int, int, int],
        binary: bool = False,
        dropout: float = 0.1,
        width: float = 1.0,
    ) -> nn.Module:
        return VGG(
            self.blocks, input_shape, num_classes, self.hidden, binary=binary, dropout=dropout,
            ceil_from=self.ceil_from, width=width, pooling=self.pooling,
        )


VGG15_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

ARCHS: dict[str, Arch] = {
    "vgg15ab": Arch(
        VGG15_BLOCKS, 4096,
        "the paper's VGG-15, avg-pool before ReLU (CIFAR-100: 32x32, ImageNet: 224x224)",
    ),
    "vgg15avg": Arch(
        VGG15_BLOCKS, 4096,
        "VGG-15 with ReLU then avg-pool (the pooling ablation's VGG_15_avg)",
        pooling="avg-after-relu",
    ),
    "vgg15max": Arch(
        VGG15_BLOCKS, 4096,
        "VGG-15 with max-pool before ReLU (the pooling ablation's VGG_15_max)",
        pooling="max-before-relu",
    ),
    "vgg8ab": Arch(
        ((32, 32), (64, 64), (128, 128)),
        512,
        "small VGG for 32x32 images (CIFAR-10), CPU-sized: 6 conv + 2 linear",
    ),
    "vgg6ab": Arch(
        ((32, 32), (64, 64)),
        128,
        "tiny VGG for 8x8 digits: 4 conv + 2 linear",
    ),
}

DEFAULT_ARCH: dict[str, str] = {
    "digits": "vgg6ab",
    "cifar10": "vgg8ab",
    "cifar100": "vgg15ab",
    "imagenet": "vgg15ab",
    "imagefolder": "vgg8ab",
}


def build_model(
    arch: str,
    num_classes: int,
    input_shape: tuple[int, int, int],
    binary: bool = False,
    dropout: float = 0.1,
    width: float = 1.0,
) -> nn.Module:
    """Build `arch` for `num_classes` classes and inputs of `input_shape` (C, H, W).

    `width` scales every conv and hidden width (rounded, at least 1); the input channels and the
    class count stay as given, and width 1 builds the arch exactly.
    """
    if arch not in ARCHS:
        raise ConfigError(
            f"unknown architecture {arch!r}",
            f"use one of: {', '.join(sorted(ARCHS))}",
        )
    if not width > 0:
        raise ConfigError(f"width {width} is not > 0", "use a width multiplier such as 0.25 or 1")
    try:
        return ARCHS[arch].build(
            num_classes, input_shape, binary=binary, dropout=dropout, width=width
        )
    except ValueError as e:
        raise ConfigError(f"{arch}: {e}", "use larger images or a smaller architecture") from e


