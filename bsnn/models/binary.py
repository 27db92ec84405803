"""Binary (XNOR-Net style) convolution and linear layers, and the authors' training steps.

The forward pass uses sign(W) * alpha, alpha = mean |W| per output channel; the optimiser keeps
updating the full-precision shadow weights through a straight-through estimator (gradient passed
where |W| <= 1). State-dict keys are the same as nn.Conv2d / nn.Linear (`weight`, `bias`), so a
binary checkpoint has the layout of a full-precision one.

Two ways to train them (`bsnn train --binarize`):

- `ste`: the gradient autograd gives through `binarize` (straight through the sign where
  |W| <= 1, exact through alpha); the shadow weights are left as the optimiser makes them.
- `xnor`: the behaviour of the BinOp of the first author's XNOR-Net-PyTorch fork
  (lusensama/XNOR-Net-PyTorch, CIFAR_100/util.py and ImageNet/networks/util.py), with which the
  paper's binary VGGs were fine-tuned: before every forward pass each binary layer's shadow
  weights are mean-centred over the input channels (dim 1) and clamped to [-1, 1]; after the
  backward pass the gradient, which is the one autograd gives here, is multiplied by
  n * (1 - 1/C_in) (n = weights per output channel). `XnorBinOp` does both; bsnn.train decides
  when (and how the optimiser treats these weights: see `make_optimizer` there).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bsnn.errors import ConfigError


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


def binary_layers(model: nn.Module) -> list[BinaryConv2d | BinaryLinear]:
    """The model's binary layers (all weighted layers but the first and the last), in order."""
    return [m for m in model.modules() if isinstance(m, BinaryConv2d | BinaryLinear)]


class XnorBinOp:
    """The authors' BinOp as behaviour, on a model's binary layers.

    Their step, in order: (1) centre and clamp the real weights, (2) keep a copy, (3) put
    sign(W) * alpha in their place, (4) forward and backward, so the gradient G is that of the
    binary weight, (5) put the real weights back, (6) replace the gradient by
    (alpha * G * [|W| <= 1] + sign(W) * sum_channel(sign(W) * G) / n) * (1 - 1/C_in) * n * 1e9,
    (7) optimizer.step(). Here the binary layers' forward binarises by itself, so (2), (3) and
    (5) are not needed, and autograd through `binarize` already gives the bracket of (6):
    `scale_gradients` applies the factor n * (1 - 1/C_in). Their 1e9 is left to the optimiser
    (bsnn.train.make_optimizer), where it only mattered.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = binary_layers(model)
        narrow = [layer for layer in self.layers if layer.weight.shape[1] < 2]
        if narrow:  # their centring over one input channel would zero every weight
            raise ConfigError(f"a binary layer has {narrow[0].weight.shape[1]} input channel: "
                              "xnor training's centring over input channels would zero it",
                              "pass a larger --width, or --binarize ste")

    @torch.no_grad()
    def constrain(self) -> None:
        """Mean-centre each weight over dim 1 (the input channels: one mean per output channel
        and kernel position), then clamp to [-1, 1] — their step (1), in place."""
        for layer in self.layers:
            w = layer.weight
            w.sub_(w.mean(dim=1, keepdim=True)).clamp_(-1.0, 1.0)

    @torch.no_grad()
    def scale_gradients(self) -> None:
        """Multiply each binary weight's gradient by n * (1 - 1/C_in), their step (6)'s factor
        (n = C_in * kh * kw for a conv, in_features for a linear layer)."""
        for layer in self.layers:
            w = layer.weight
            if w.grad is not None:
                n = w[0].numel()
                w.grad.mul_(n * (1.0 - 1.0 / w.shape[1]))
