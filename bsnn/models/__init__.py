"""Models: VGGs with average pooling before the ReLU, full precision or binary."""

from bsnn.models.binary import BinaryConv2d, BinaryLinear
from bsnn.models.registry import ARCHS, DEFAULT_ARCH, build_model
from bsnn.models.vgg import VGGAvgBeforeReLU

__all__ = [
    "ARCHS",
    "DEFAULT_ARCH",
    "BinaryConv2d",
    "BinaryLinear",
    "VGGAvgBeforeReLU",
    "build_model",
]
