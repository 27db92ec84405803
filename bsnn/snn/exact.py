"""The exact float16 path: +-1 layers fed 0/1 spikes, summed in float16 without rounding.

Shared with the int8 path (bsnn.snn.int8): which ops are +-1 and which ops leave 0/1 spikes 0/1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bsnn.snn.network import SpikingLayer

HALF_EXACT = 2048  # float16 holds every integer of magnitude <= 2**11
SPIKE_PRESERVING = (nn.Flatten, nn.Dropout, nn.Identity)  # 0/1 in, 0/1 out


def is_sign_op(op: nn.Module) -> bool:
    """A plain conv or linear whose weights are all +-1 (its forward then is F.conv2d/linear
    with them, binary layers included: sign(w) x mean|w| = w)."""
    if isinstance(op, nn.Conv2d):
        if op.groups != 1 or op.padding_mode != "zeros" or isinstance(op.padding, str):
            return False
    elif not isinstance(op, nn.Linear):
        return False
    return op.bias is None and bool(op.weight.detach().abs().eq(1).all())


class ExactHalf(nn.Module):
    """A +-1 conv or linear on 0/1 spikes in float16 with the float32 result, bit for bit.

    The input channels are split into groups of fan-in <= 2048, so every partial sum (in any
    order, with any accumulator) is an integer of magnitude <= 2048, which float16 holds
    exactly; each group's sum is made float32 and the groups add in float32 (exact below
    2**24). bfloat16 would hold integers only up to 256, and no conv in torch returns float32
    from bfloat16 inputs, so it is not used. An algorithm that transforms its operands
    (Winograd, FFT) could still round: `benchmarks/gpu_check.sh` compares spike counts on CUDA.
    """

    def __init__(self, op: nn.Conv2d | nn.Linear) -> None:
        super().__init__()
        w = op.weight.detach()
        per_channel = w[0, 0].numel()  # kh * kw for a conv, 1 for a linear
        groups = math.ceil(w.shape[1] * per_channel / HALF_EXACT)
        size = math.ceil(w.shape[1] / groups)
        self.bounds = [(c, min(c + size, w.shape[1])) for c in range(0, w.shape[1], size)]
        self.weights = [w[:, a:b].half().contiguous() for a, b in self.bounds]
        self.conv = {"stride": op.stride, "padding": op.padding,
                     "dilation": op.dilation} if isinstance(op, nn.Conv2d) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = x.half()
        out: torch.Tensor | None = None
        for (a, b), w in zip(self.bounds, self.weights, strict=True):
            part = half[:, a:b]
            y = (F.conv2d(part, w, **self.conv) if self.conv is not None
                 else F.linear(part, w)).float()
            out = y if out is None else out.add_(y)
        assert out is not None
        return out


def half_exact_ops(layer: SpikingLayer, spikes_in: bool) -> nn.Sequential | None:
    """`layer.ops` with its +-1 conv or linear made `ExactHalf`, or None where float16 would
    not be exact: the input is not 0/1 spikes (`spikes_in` False: the analog image, or spikes
    of per-channel amplitudes) or something other than flatten/dropout comes before it."""
    if not spikes_in:
        return None
    ops = list(layer.ops)
    for i, op in enumerate(ops):
        if is_sign_op(op):
            return nn.Sequential(*ops[:i], ExactHalf(op), *ops[i + 1:])
        if not isinstance(op, SPIKE_PRESERVING):
            return None
    return None


@dataclass
class HalfCurrent:
    """A layer's current with its +-1 conv or linear in exact float16 (`half_exact_ops`)."""

    ops: nn.Sequential
    bias: torch.Tensor | None

    def __call__(self, incoming: torch.Tensor) -> torch.Tensor:
        out = self.ops(incoming)
        return out if self.bias is None else out + self.bias
