"""Models: the paper's VGGs and its pooling ablation's, full precision or binary."""

from bsnn.models.binary import BinaryConv2d, BinaryLinear
from bsnn.models.registry import ARCHS, DEFAULT_ARCH, build_model
from bsnn.models.vgg import VGG

__all__ = [
    "ARCHS",
    "DEFAULT_ARCH",
    "VGG",
    "BinaryConv2d",
    "BinaryLinear",
    "build_model",
]
