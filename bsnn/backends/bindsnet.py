"""The converted network simulated by bindsnet (0.3.4): a reference for the engine, not the default.

One bindsnet `Network` per SpikingNetwork, named by the converted layers' names: an `Input` layer
that carries the analog image (or the Poisson spikes) every step, one `IFNeurons` layer per spiking
layer, a non-spiking `Readout` that sums the output layer's current, and between consecutive layers
a `LayerConnection` whose `compute(s)` is the layer's own `current(s * amplitude)` — conv, avg-pool,
flatten, linear and bias all go through it, so no layer can be skipped.

The simulation is bindsnet's own `Network.run` in both modes (layers are added in network order):
- `delayed`: `run(one_step=False)`, bindsnet's default. Each step first computes every layer's
  input from all sources' spikes of the previous step, then updates the layers; so every
  connection, input -> first layer and last spiking layer -> readout included, is one step late.
- `same-step`: `run(one_step=True)`. Layers update in the order they were added, each computing its
  input from its source's spikes of this very step.
Counting: a `StepCounters` monitor, which `run` calls after every step, adds up spikes, synaptic
operations (spikes per neuron x fan-out, in float64) and correct predictions; no rasters are kept.

Why bindsnet's own pieces are not enough: `IFNodes` resets to a fixed potential and has a
refractory period; `conversion.SubtractiveResetIFNodes` does `v[s] - thresh`, which fails for a
per-channel threshold, and starts at its reset potential. `conversion.ann_to_snn` silently skips
AvgPool2d. `Network.run` calls `normalize()` on every connection, which `AbstractConnection` lacks.
`Nodes.reset_state_variables` zeroes `s` in place, and after a run `Input.s` *is* the caller's
image tensor, so state is renewed with `set_batch_size` (fresh tensors) instead.

bindsnet allocates its input buffers in float32, so this backend runs in float32, like the engine
on float32 images. `SimOptions.time_chunk` does not apply: bindsnet steps one at a time.
"""

from __future__ import annotations

import functools
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

from bsnn.errors import ConfigError
from bsnn.snn.encoding import poisson_steps
from bsnn.snn.engine import BatchCounts, SimOptions
from bsnn.snn.network import SpikingLayer, SpikingNetwork

INPUT = "input"
POISSON_BUDGET_BYTES = 64 << 20  # Poisson inputs are drawn and run in chunks of about this size
CHOICES = {
    "propagation": ("same-step", "delayed"),
    "reset": ("subtract", "zero"),
    "v0": ("zero", "half"),
    "encoding": ("constant", "poisson"),
}


def _import_bindsnet() -> ModuleType:
    """`bindsnet.network`, or a ConfigError that says how to install it."""
    try:
        from bindsnet import network
    except ImportError as e:
        raise ConfigError("the bindsnet backend needs bindsnet",
                          "pip install 'bsnn[bindsnet]'") from e
    return network


@functools.cache
def _classes() -> SimpleNamespace:
    """The bindsnet subclasses, built once bindsnet is known to import."""
    from bindsnet.network.monitors import AbstractMonitor
    from bindsnet.network.nodes import Nodes
    from bindsnet.network.topology import AbstractConnection

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

    return SimpleNamespace(IFNeurons=IFNeurons, Readout=Readout, LayerConnection=LayerConnection,
                           StepCounters=StepCounters)


def _check(options: SimOptions) -> None:
    for name, allowed in CHOICES.items():
        value = getattr(options, name)
        if value not in allowed:
            raise ConfigError(f"unknown {name} {value!r}", f"use one of: {', '.join(allowed)}")


class BindsnetBackend:
    """The engine's interface (`run_batch -> BatchCounts`) on a bindsnet Network; see the module
    docstring for how bindsnet is driven."""

    def __init__(self, net: SpikingNetwork, options: SimOptions) -> None:
        bindsnet_network = _import_bindsnet()
        _check(options)
        cls = _classes()
        self.net, self.opt = net, options
        network = bindsnet_network.Network(dt=1.0, learning=False)
        network.add_layer(bindsnet_network.nodes.Input(shape=list(net.input_shape)), name=INPUT)
        source, amplitude = INPUT, None
        neurons = []
        for layer in net.layers:
            nodes = (cls.Readout(layer) if layer.is_output
                     else cls.IFNeurons(layer, options.reset, options.v0))
            network.add_layer(nodes, name=layer.name)
            network.add_connection(
                cls.LayerConnection(network.layers[source], nodes, layer, amplitude),
                source=source, target=layer.name)
            if not layer.is_output:
                neurons.append(nodes)
            source, amplitude = layer.name, layer.spike_amplitude
        self.counters = cls.StepCounters(neurons, [layer.fan_out for layer in net.spiking],
                                         network.layers[net.output.name], options.time)
        network.add_monitor(self.counters, name="counters")
        self.network = network.to(net.layers[0].threshold.device)

    def _renew_state(self, batch: int) -> None:
        """Fresh state for a batch (see the module docstring for why not reset_state_variables)."""
        self.network.batch_size = batch
        for nodes in self.network.layers.values():
            nodes.set_batch_size(batch)

    @torch.no_grad()
    def run_batch(self, x: torch.Tensor, labels: torch.Tensor, batch_index: int = 0) -> BatchCounts:
        opt, T = self.opt, self.opt.time
        one_step = opt.propagation == "same-step"
        self._renew_state(x.shape[0])
        self.counters.start(labels)
        if opt.encoding == "constant":
            self.network.run({INPUT: x.expand(T, *x.shape)}, time=T, one_step=one_step)
        else:
            chunk = max(1, POISSON_BUDGET_BYTES // (4 * x.numel()))
            for t0 in range(0, T, chunk):
                steps = range(t0, min(T, t0 + chunk))
                spikes = poisson_steps(x, self.net.input_scale, opt.seed, batch_index, steps)
                self.network.run({INPUT: spikes}, time=len(steps), one_step=one_step)
        c = self.counters
        return BatchCounts(c.correct, c.spikes, c.synops)
