"""The converted spiking network: a chain of spiking layers, each a linear map into IF neurons.

This is the one hand-off between conversion and every simulator (the engine, bindsnet, the test
reference), so it holds plain tensors and modules and no simulation state.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn


@dataclass
class SpikingLayer:
    """Linear ops feeding one population of IF neurons (or, for the output, a non-spiking readout).

    current(t) = ops(incoming spikes * amplitude of the source layer) + bias.
    `threshold` broadcasts to one image's neuron shape (a scalar, or one value per channel).
    `spike_amplitude` (channel-wise thresholds only) is the value a spike of this layer carries
    into the next layer, one per channel; None means 1 (pure binary spikes).
    `fan_out` counts, per neuron, the synapses (nonzero weights) it drives in the next layer.
    `delay` is how many steps the incoming spikes take to arrive with delayed propagation: the
    number of layers the original's BindsNET network has for these ops (one per conv, linear and
    pooling), each one step late; the bias arrives from step 0. Same-step propagation ignores it.
    `ops` may hold a max-pool after the conv: per step, the max of that step's currents.
    """

    name: str
    kind: str  # conv | linear | pool
    ops: nn.Sequential
    bias: torch.Tensor | None
    threshold: torch.Tensor | None
    lam: torch.Tensor | None  # lambda: the percentile(s) of the ANN's ReLU output, theta's source
    shape: tuple[int, ...]  # one image's neuron shape
    binary: bool = False
    spike_amplitude: torch.Tensor | None = None
    fan_out: torch.Tensor | None = None  # flat (neurons,), float
    v_init: torch.Tensor | None = None  # added to the initial potential (SNN calibration)
    sources: list[str] = field(default_factory=list)
    delay: int = 1

    @property
    def neurons(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def is_output(self) -> bool:
        return self.threshold is None

    def current(self, incoming: torch.Tensor) -> torch.Tensor:
        """The input current for a batch of incoming spikes (or the analog image)."""
        out = self.ops(incoming)
        return out if self.bias is None else out + self.bias

    def to(self, device: torch.device | str) -> SpikingLayer:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self, ops=copy.deepcopy(self.ops).to(device), bias=move(self.bias),
            threshold=move(self.threshold),
            lam=move(self.lam), spike_amplitude=move(self.spike_amplitude),
            fan_out=move(self.fan_out), v_init=move(self.v_init),
        )

    def describe(self) -> dict[str, Any]:
        """The layer's row in the `thresholds` event and the conversion summary."""
        th = self.threshold
        lam = self.lam
        return {
            "name": self.name,
            "kind": self.kind,
            "neurons": self.neurons,
            "shape": list(self.shape),
            "binary": self.binary,
            "threshold": None if th is None else float(th.float().mean()),
            "threshold_min": None if th is None else float(th.min()),
            "threshold_max": None if th is None else float(th.max()),
            "lam": None if lam is None else (float(lam) if lam.numel() == 1
                                             else [float(v) for v in lam.flatten()]),
            "lam_mean": None if lam is None else float(lam.float().mean()),
            "fan_out": None if self.fan_out is None else float(self.fan_out.mean()),
            "sources": self.sources,
        }


@dataclass
class SpikingNetwork:
    """Spiking layers in order; the last one is the non-spiking output."""

    layers: list[SpikingLayer]
    input_shape: tuple[int, int, int]
    percentile: float
    granularity: str
    input_scale: float = 1.0  # max |input| over the images the thresholds came from (Poisson)

    @property
    def spiking(self) -> list[SpikingLayer]:
        return self.layers[:-1]

    @property
    def output(self) -> SpikingLayer:
        return self.layers[-1]

    def to(self, device: torch.device | str) -> SpikingNetwork:
        return replace(self, layers=[layer.to(device) for layer in self.layers])

    def describe(self) -> list[dict[str, Any]]:
        return [layer.describe() for layer in self.layers]
