"""The converted network simulated by bindsnet (0.3.4): a reference for the engine, not the default.

One bindsnet `Network` per SpikingNetwork, named by the converted layers' names: an `Input` layer
that carries the analog image (or the Poisson spikes) every step, one `IFNeurons` layer per spiking
layer, a non-spiking `Readout` that sums the output layer's current, and between consecutive layers
a `LayerConnection` whose `compute(s)` is the layer's own `current(s * amplitude)` — conv, pooling,
flatten, linear and bias all go through it, so no layer can be skipped. A layer whose `delay` is
n > 1 (its ops held n convs, linears and poolings, each a layer of the original's BindsNET
network) is reached through n - 1 `PassThrough` layers, as in the original.

The simulation is bindsnet's own `Network.run` in both modes (layers are added in network order):
- `delayed`: `run(one_step=False)`, bindsnet's default. Each step first computes every layer's
  input from all sources' spikes of the previous step, then updates the layers; so every
  connection, input -> first layer, pass-throughs and last spiking layer -> readout included,
  is one step late.
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

from types import ModuleType

import torch

from bsnn.errors import ConfigError
from bsnn.snn.encoding import poisson_steps
from bsnn.snn.engine import BatchCounts
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

INPUT = "input"
POISSON_BUDGET_BYTES = 64 << 20  # Poisson inputs are drawn and run in chunks of about this size


def _import_bindsnet() -> ModuleType:
    """`bindsnet.network`, or a ConfigError that says how to install it."""
    try:
        from bindsnet import network
    except ImportError as e:
        raise ConfigError("the bindsnet backend needs bindsnet",
                          "pip install 'bsnn[bindsnet]'") from e
    return network


class BindsnetBackend:
    """The engine's interface (`run_batch -> BatchCounts`) on a bindsnet Network; see the module
    docstring for how bindsnet is driven."""

    def __init__(self, net: SpikingNetwork, options: SimOptions) -> None:
        bindsnet_network = _import_bindsnet()
        from bsnn.backends import bindsnet_parts as parts  # imports bindsnet: only now

        self.net, self.opt = net, options
        network = bindsnet_network.Network(dt=1.0, learning=False)
        network.add_layer(bindsnet_network.nodes.Input(shape=list(net.input_shape)), name=INPUT)
        source, shape, amplitude = INPUT, net.input_shape, None
        neurons = []
        for layer in net.layers:
            for hop in range(1, layer.delay):
                name = f"{layer.name}_pass{hop}"
                network.add_layer(parts.PassThrough(shape=list(shape)), name=name)
                network.add_connection(parts.IdentityConnection(
                    network.layers[source], network.layers[name]), source=source, target=name)
                source = name
            nodes = (parts.Readout(layer) if layer.is_output
                     else parts.IFNeurons(layer, options.reset, options.v0))
            network.add_layer(nodes, name=layer.name)
            network.add_connection(
                parts.LayerConnection(network.layers[source], nodes, layer, amplitude),
                source=source, target=layer.name)
            if not layer.is_output:
                neurons.append(nodes)
            source, shape, amplitude = layer.name, layer.shape, layer.spike_amplitude
        self.counters = parts.StepCounters(neurons, [layer.fan_out for layer in net.spiking],
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
