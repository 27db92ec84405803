"""The bindsnet subclasses the bindsnet backend builds its Network from.

This module imports bindsnet at its top, so only `bsnn.backends.bindsnet` imports it, and only
once a backend is built (after checking that bindsnet is there); see that module's docstring for
why bindsnet's own node and connection classes are not used.
"""

from __future__ import annotations

from typing import Any

import torch
from bindsnet.network.monitors import AbstractMonitor
from bindsnet.network.nodes import Nodes
from bindsnet.network.topology import AbstractConnection

from bsnn.snn.network import SpikingLayer


class IFNeurons(Nodes):
    """IF neurons as the engine defines them: v += x; spike where v >= theta (a scalar or one
    per channel); then v -= theta (`subtract`) or v = 0 (`zero`); v starts at 0 or theta/2."""

    def __init__(self, layer: SpikingLayer, reset: str, v0: str) -> None:
        super().__init__(shape=list(layer.shape))
        self.register_buffer("thresh", layer.threshold)
        self.register_buffer("v", torch.empty(0))
        self.register_buffer("v_init", layer.v_init)
        self.subtract = reset == "subtract"
        self.half = v0 == "half"

    def forward(self, x: torch.Tensor) -> None:
        self.v += x
        self.s = self.v >= self.thresh
        if self.subtract:
            self.v -= self.s * self.thresh
        else:
            self.v.masked_fill_(self.s, 0.0)
        super().forward(x)

    def _rest(self) -> None:
        self.v = torch.zeros(self.batch_size, *self.shape, device=self.s.device)
        if self.half:
            self.v += self.thresh / 2
        if self.v_init is not None:
            self.v += self.v_init

    def set_batch_size(self, batch_size: int) -> None:
        super().set_batch_size(batch_size)
        self._rest()

    def reset_state_variables(self) -> None:
        super().reset_state_variables()
        self._rest()


class Readout(Nodes):
    """The non-spiking output: `v` is its input current summed over the steps so far, in
    float64 and step by step, so the sum (and the argmax) does not depend on chunking."""

    def __init__(self, layer: SpikingLayer) -> None:
        super().__init__(shape=list(layer.shape))
        self.register_buffer("v", torch.empty(0))

    def forward(self, x: torch.Tensor) -> None:
        self.v += x
        super().forward(x)

    def set_batch_size(self, batch_size: int) -> None:
        super().set_batch_size(batch_size)
        self.v = torch.zeros(batch_size, *self.shape, dtype=torch.float64,
                             device=self.s.device)

    def reset_state_variables(self) -> None:
        super().reset_state_variables()
        self.v.zero_()


class PassThrough(Nodes):
    """Passes on what it receives, one step late in `delayed` mode: a conv's or pooling's own
    layer in the original's BindsNET network (its conversion's pass-through and pooling layers),
    so a spiking layer with `delay` n is reached through n - 1 of these."""

    def forward(self, x: torch.Tensor) -> None:
        self.s = x
        super().forward(x)


class IdentityConnection(AbstractConnection):
    """compute(s) = s as float32: spikes or the image, unchanged, into a PassThrough."""

    def compute(self, s: torch.Tensor) -> torch.Tensor:
        return s.to(torch.float32)

    def update(self, **kwargs: Any) -> None:
        super().update(**kwargs)

    def normalize(self) -> None:
        """Called by `Network.run` after every run; there are no weights."""

    def reset_state_variables(self) -> None:
        """Stateless."""


class LayerConnection(AbstractConnection):
    """compute(s) = layer.current(s * amplitude of the source): the very arithmetic the
    engine does, so both simulators see bit-identical currents."""

    def __init__(self, source: Nodes, target: Nodes, layer: SpikingLayer,
                 amplitude: torch.Tensor | None) -> None:
        super().__init__(source, target)
        self.layer = layer
        self.ops = layer.ops  # a submodule, so `network` lists it
        self.amplitude = amplitude

    def compute(self, s: torch.Tensor) -> torch.Tensor:
        incoming = s.to(torch.float32)  # bool spikes, or the image / Poisson input
        if self.amplitude is not None:
            incoming = incoming * self.amplitude
        return self.layer.current(incoming)

    def update(self, **kwargs: Any) -> None:
        super().update(**kwargs)

    def normalize(self) -> None:
        """Called by `Network.run` after every run; there are no plastic weights."""

    def reset_state_variables(self) -> None:
        """Stateless."""


class StepCounters(AbstractMonitor):
    """Called by `Network.run` after every step: adds the step's spikes and synaptic
    operations per layer and the correct predictions (argmax of the readout's sum)."""

    def __init__(self, neurons: list[IFNeurons], fan_out: list[torch.Tensor],
                 readout: Readout, time: int) -> None:
        super().__init__()
        self.neurons, self.readout, self.time = neurons, readout, time
        self.fan_out = [f.double() for f in fan_out]
        self.labels = torch.empty(0, dtype=torch.long)
        self.reset_state_variables()

    def start(self, labels: torch.Tensor) -> None:
        self.labels = labels
        self.reset_state_variables()

    def reset_state_variables(self) -> None:
        dev = self.labels.device
        self.step = 0
        self.correct = torch.zeros(self.time, dtype=torch.long, device=dev)
        self.spikes = torch.zeros(len(self.neurons), self.time, dtype=torch.float64,
                                  device=dev)
        self.synops = torch.zeros_like(self.spikes)

    def record(self) -> None:
        t = self.step
        for i, (nodes, fan_out) in enumerate(zip(self.neurons, self.fan_out, strict=True)):
            per_neuron = nodes.s.flatten(1).sum(0, dtype=torch.float64)
            self.spikes[i, t] = per_neuron.sum()
            self.synops[i, t] = per_neuron @ fan_out
        predicted = self.readout.v.flatten(1).argmax(-1)
        self.correct[t] = (predicted == self.labels).sum()
        self.step += 1
