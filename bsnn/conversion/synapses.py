"""Synapses of a converted network: what each neuron drives, and the ANN's MACs per layer.

The engine counts synaptic operations as spikes times fan-out; the energy estimate
(bsnn.energy) compares them with the ANN's multiply-accumulates, counted the same way.
"""

from __future__ import annotations

import torch
from torch import nn

from bsnn.conversion.chain import WEIGHTED
from bsnn.snn.network import SpikingLayer, SpikingNetwork


def synapse_fan_out(ops: nn.Sequential, shape: tuple[int, ...]) -> torch.Tensor:
    """Synapses each source neuron drives: nonzero weights of the next layer's first conv or
    linear (exact at borders), traced back through any flatten / pooling before it."""
    mask_ops: list[nn.Module] = []
    for op in ops:
        if isinstance(op, WEIGHTED):
            masked = type(op).__new__(type(op))
            masked.__dict__ = op.__dict__.copy()
            masked._parameters = {"weight": (op.weight != 0).float(), "bias": None}
            mask_ops.append(masked)
            break
        if isinstance(op, nn.AvgPool2d):  # count synapses (paths), not the 1/k^2 weights
            op = nn.AvgPool2d(op.kernel_size, op.stride, op.padding, op.ceil_mode,
                              op.count_include_pad, divisor_override=1)
        mask_ops.append(op)
    device = next((p.device for p in ops.parameters()), torch.device("cpu"))
    x = torch.zeros(1, *shape, device=device, requires_grad=True)
    with torch.enable_grad():
        nn.Sequential(*mask_ops)(x).sum().backward()
    return x.grad.reshape(-1).detach()


def input_fan_out(network: SpikingNetwork) -> torch.Tensor:
    """Synapses each input pixel drives in the first layer (flat, one image)."""
    return synapse_fan_out(network.layers[0].ops, network.input_shape)


def _macs(layer: SpikingLayer, source_shape: tuple[int, ...]) -> float:
    """Synapses of the layer's conv or linear (the ANN's MACs per image): pooling or flatten
    before it only shapes its input; pooling after it adds, not multiplies."""
    ops = list(layer.ops)
    k = next(i for i, op in enumerate(ops) if isinstance(op, WEIGHTED))
    device = next((p.device for p in layer.ops.parameters()), torch.device("cpu"))
    with torch.no_grad():
        shape = nn.Sequential(*ops[:k])(torch.zeros(1, *source_shape, device=device)).shape[1:]
    return float(synapse_fan_out(nn.Sequential(ops[k]), tuple(shape)).sum())


def layer_macs(network: SpikingNetwork) -> list[float]:
    """The ANN's multiply-accumulates per image into each layer, in network order."""
    sources = [network.input_shape, *(layer.shape for layer in network.layers[:-1])]
    return [_macs(layer, shape) for layer, shape in zip(network.layers, sources, strict=True)]
