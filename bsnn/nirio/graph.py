"""A NIR graph under construction: a converted network's layers as a chain of NIR nodes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from bsnn.errors import ConversionError
from bsnn.nirio.common import WEIGHTED, pair
from bsnn.snn.network import SpikingLayer, SpikingNetwork


def _full(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """`t` broadcast to a whole layer's neurons (NIR gives every neuron its parameters)."""
    return torch.broadcast_to(t, shape).clone()


@dataclass
class Graph:
    """A NIR graph under construction: a chain from "input" to "output"."""

    nir: ModuleType
    pooling: str
    nodes: dict[str, Any] = field(default_factory=dict)
    edges: list[tuple[str, str]] = field(default_factory=list)
    last: str = "input"
    metadata: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, node: Any) -> None:
        self.nodes[name] = node
        if name != "input":
            self.edges.append((self.last, name))
        self.last = name

    def build(self) -> Any:
        return self.nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=self.metadata)

    def write_network(self, network: SpikingNetwork, v0: str) -> None:
        """Every layer's nodes, between the input and the output node."""
        nir = self.nir
        shape = tuple(network.input_shape)
        self.add("input", nir.Input(input_type={"input": np.array(shape)}))
        initial: dict[str, np.ndarray] = {}
        for layer in network.layers:
            shape = self._layer(layer, shape, v0, initial)
        self.add("output", nir.Output(output_type={"output": np.array(shape)}))
        if initial:
            self.metadata["initial_potential"] = initial

    def _layer(self, layer: SpikingLayer, shape: tuple[int, ...], v0: str,
               initial: dict[str, np.ndarray]) -> tuple[int, ...]:
        """One spiking layer's nodes; its output shape. With sum pooling the layer's current is
        c = (product of the windows) times bsnn's, so its thresholds, bias and initial
        potential are c times theirs (exact for windows of 2^k positions, as 2x2)."""
        ops = list(layer.ops)
        weighted = [i for i, op in enumerate(ops) if isinstance(op, WEIGHTED)]
        if layer.bias is not None and not weighted:
            raise ConversionError(f"{layer.name}: a bias without a conv or linear to carry it",
                                  "NIR adds biases in Conv2d and Affine nodes only")
        factors = [self._factor(op, layer.name) for op in ops]
        scale = math.prod(factors)
        names = []
        for i, op in enumerate(ops):
            bias = None
            if weighted and i == weighted[-1]:
                before = math.prod(factors[:i])
                bias = None if layer.bias is None else layer.bias.reshape(-1) * before
            names.append(f"{layer.name}.{i}")
            node, out = self._op_node(op, shape, bias, layer.name)
            self.add(names[-1], node)
            shape = out
        info: dict[str, Any] = {"name": layer.name, "kind": layer.kind, "binary": layer.binary,
                                "sources": layer.sources, "scale": scale, "nodes": names,
                                "lam": None if layer.lam is None else layer.lam.tolist()}
        divisors = {n: op.divisor_override for n, op in zip(names, ops, strict=True)
                    if isinstance(op, nn.AvgPool2d) and op.divisor_override}
        if divisors:
            info["divisors"] = divisors
        if not layer.is_output:
            self._neurons(layer, shape, scale, v0, initial, info)
        self.layers.append(info)
        return shape

    def _neurons(self, layer: SpikingLayer, shape: tuple[int, ...], scale: int, v0: str,
                 initial: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        """The layer's IF node (and its spikes' amplitude as a Scale node)."""
        threshold = layer.threshold
        assert threshold is not None
        node = f"{layer.name}.if"
        v_th = _full(threshold, shape) * scale
        self.add(node, self.nir.IF(r=np.ones(shape, dtype=v_th.numpy().dtype),
                                   v_threshold=v_th.numpy()))
        info["nodes"].append(node)
        if v0 == "half" or layer.v_init is not None:
            v = torch.zeros(shape, dtype=threshold.dtype)  # the engine's sum, in its order
            if v0 == "half":
                v += threshold / 2
            if layer.v_init is not None:
                v += layer.v_init
            initial[node] = (v * scale).numpy()
        if layer.spike_amplitude is not None:
            amp = f"{layer.name}.scale"
            self.add(amp, self.nir.Scale(scale=_full(layer.spike_amplitude, shape).numpy()))
            info["nodes"].append(amp)

    def _factor(self, op: nn.Module, layer: str) -> int:
        """How many times bsnn's value `op`'s node gives: a sum pool's divisor, else 1."""
        if isinstance(op, nn.AvgPool2d) and self.pooling == "sum":
            kh, kw = pair(op.kernel_size)
            return int(op.divisor_override or kh * kw)
        if isinstance(op, nn.AvgPool2d) and op.divisor_override:
            raise ConversionError(f"{layer}: a pooling with divisor {op.divisor_override} has "
                                  "no NIR AvgPool2d", "export with --pooling sum")
        return 1

    def _op_node(self, op: nn.Module, shape: tuple[int, ...], bias: torch.Tensor | None,
                 layer: str) -> tuple[Any, tuple[int, ...]]:
        """The NIR node of one linear op and the shape it outputs."""
        nir = self.nir
        with torch.no_grad():
            out = tuple(op(torch.zeros(1, *shape)).shape[1:])
        if isinstance(op, WEIGHTED):
            w = op.weight.detach()
            b = (torch.zeros(w.shape[0], dtype=w.dtype) if bias is None
                 else torch.broadcast_to(bias, (w.shape[0],)).clone())
            if isinstance(op, nn.Linear):
                return nir.Affine(weight=w.numpy(), bias=b.numpy()), out
            if op.padding_mode != "zeros":
                raise ConversionError(f"{layer}: NIR's Conv2d pads with zeros, not "
                                      f"{op.padding_mode}", "use padding_mode='zeros'")
            return nir.Conv2d(input_shape=shape[1:], weight=w.numpy(), stride=op.stride,
                              padding=op.padding, dilation=op.dilation, groups=op.groups,
                              bias=b.numpy()), out
        if isinstance(op, nn.AvgPool2d):
            if pair(op.padding) != (0, 0) or op.ceil_mode:
                raise ConversionError(f"{layer}: a pooling with padding or ceil_mode",
                                      "pool without padding (as every bsnn arch does)")
            kind = nir.SumPool2d if self.pooling == "sum" else nir.AvgPool2d
            return kind(kernel_size=np.array(pair(op.kernel_size)),
                        stride=np.array(pair(op.stride or op.kernel_size)),
                        padding=np.array([0, 0])), out
        if isinstance(op, nn.Flatten) and op.start_dim >= 1:
            end = op.end_dim - 1 if op.end_dim > 0 else op.end_dim
            return nir.Flatten(input_type={"input": np.array(shape)},
                               start_dim=op.start_dim - 1, end_dim=end), out
        if isinstance(op, nn.MaxPool2d):
            raise ConversionError(f"{layer}: NIR has no max pooling (the max of a conv's "
                                  "currents)", "export a model with average pooling (vgg15ab, "
                                  "vgg15avg); max-pool models run in bsnn only")
        raise ConversionError(f"{layer}: {type(op).__name__} has no NIR node",
                              "export conv, linear, average pooling and flatten only")
