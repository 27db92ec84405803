"""Binary (XNOR-Net style) convolution and linear layers.

The forward pass uses sign(W) * alpha, alpha = mean |W| per output channel; the optimiser keeps
updating the full-precision shadow weights through a straight-through estimator (gradient passed
where |W| <= 1). State-dict keys are the same as nn.Conv2d / nn.Linear (`weight`, `bias`), so a
binary checkpoint has the layout of a full-precision one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _SignSTE(torch.autograd.Function):
    """sign with sign(0) = +1; gradient passed straight through where |w| <= 1."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(w)
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def weight_signs(weight: torch.Tensor) -> torch.Tensor:
    """+-1 per weight (0 counts as +1), as int8."""
    return torch.where(weight >= 0, 1, -1).to(torch.int8)


def weight_alpha(weight: torch.Tensor) -> torch.Tensor:
    """Per-output-channel scale mean |W|, shape (out_channels,)."""
    return weight.detach().abs().flatten(1).mean(dim=1)


def binarize(weight: torch.Tensor) -> torch.Tensor:
    """sign(W) * alpha with the straight-through gradient; alpha carries its own gradient."""
    alpha = weight.abs().flatten(1).mean(dim=1).view(-1, *([1] * (weight.dim() - 1)))
    return _SignSTE.apply(weight) * alpha


class BinaryLayer:
    """Mixin: the exact binary form of a layer, as deployed."""

    weight: torch.Tensor

    def binary_weight(self) -> torch.Tensor:
        """The weight the forward pass uses: exactly +-alpha per output channel."""
        alpha = weight_alpha(self.weight).view(-1, *([1] * (self.weight.dim() - 1)))
        return weight_signs(self.weight).to(self.weight.dtype) * alpha


class BinaryConv2d(BinaryLayer, nn.Conv2d):
    """Conv2d whose forward uses binarised weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, binarize(self.weight), self.bias)


class BinaryLinear(BinaryLayer, nn.Linear):
    """Linear whose forward uses binarised weights."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, binarize(self.weight), self.bias)
