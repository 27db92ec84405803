"""The ANN of a network read from a NIR file, which `bsnn.simulate` judges its SNN against."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from bsnn.conversion import Group, chain_forward
from bsnn.snn.network import SpikingLayer


class _Mul(nn.Module):
    """x * factor (per channel or neuron): from a NIR file's units to the ANN's."""

    def __init__(self, factor: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("factor", factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _per_channel(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return t.view(-1, 1, 1) if t.dim() == 1 and len(shape) == 3 else t


def ann_groups(layers: list[SpikingLayer]) -> list[Group]:
    """The ANN the network stands for, as a chain of groups: each spiking layer's ReLU output is
    lambda times its rate (the original ANN's activation where the file keeps the lambdas, the
    rate times theta otherwise), so its accuracy and activations are the original's."""
    groups: list[Group] = []
    into: torch.Tensor | None = None  # from the last layer's activation to the next's input
    for layer in layers:
        ops = [_Mul(into)] if into is not None else []
        ops += list(layer.ops)
        bias = layer.bias
        if layer.threshold is not None:
            lam = layer.threshold if layer.lam is None else _per_channel(layer.lam, layer.shape)
            if layer.lam is not None:
                gain = lam / layer.threshold
                ops.append(_Mul(gain))
                bias = None if bias is None else bias * gain
            amp = layer.spike_amplitude
            into = (1 if amp is None else amp) / lam
        groups.append(Group(ops=ops, bias=bias, relu=layer.threshold is not None,
                            binary=layer.binary, sources=list(layer.sources)))
    return groups


class NirModel(nn.Module):
    """The ANN of a network read from a NIR file (chain groups, see `ann_groups`), so that
    `bsnn.simulate` judges the SNN against it; `.meta` and `.checkpoint` as `load_model`'s."""

    def __init__(self, groups: list[Group], source: str | os.PathLike[str],
                 meta: Any) -> None:
        super().__init__()
        self.groups = groups
        self.ops = nn.ModuleList(op for g in groups for op in g.ops)
        self.checkpoint = os.fspath(source)
        self.meta = meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return chain_forward(self.groups, x)[0]
