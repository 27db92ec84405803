"""A reference simulator for converted networks: obviously right, deliberately slow.

Written from the semantics below, independently of `bsnn.snn.engine`: one batch,
one time step at a time, one layer at a time, plain Python loops, float32 like the engine.
It uses only what the conversion hands over (`SpikingNetwork`: ops, bias, threshold,
spike_amplitude, fan_out, input_scale) and, for Poisson input, `poisson_step`, which defines
the input spikes of step t.

Semantics:
- IF neuron: v += current; s = (v >= threshold); reset by subtraction (v -= s * threshold)
  or to zero; v starts at 0 or threshold / 2, plus the layer's `v_init` if it has one.
- Layer current = layer.ops(incoming * source.spike_amplitude, if any) + layer.bias.
- same-step: at step t the layers update in order and a spike reaches the next layer in step t.
- delayed: the original's BindsNET network has one layer per conv, linear and pooling op, each
  one step late, so a spiking layer whose ops hold n of them (`layer.delay`) receives at step t
  what its source (the input, the previous layer) emitted at step t - n, and nothing before
  step 0: it then gets ops(0) + bias. Same for the output.
- The output layer does not spike: its current is summed; the prediction at step t is the argmax
  of the sum up to t.
- Counters per spiking layer and step: spikes (over the batch), synops = sum over neurons of
  spikes x fan_out (computed exactly, in float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bsnn.snn.encoding import poisson_step
from bsnn.snn.network import SpikingLayer, SpikingNetwork


@dataclass
class ReferenceCounts:
    correct: torch.Tensor  # (T,) int64
    spikes: torch.Tensor  # (spiking layers, T) float64
    synops: torch.Tensor  # (spiking layers, T) float64


def _current(layer: SpikingLayer, incoming: torch.Tensor) -> torch.Tensor:
    out = layer.ops(incoming)
    if layer.bias is not None:
        out = out + layer.bias
    return out


def _carried(source: SpikingLayer, spikes: torch.Tensor) -> torch.Tensor:
    """What a source layer's spikes carry into the next layer."""
    if source.spike_amplitude is None:
        return spikes
    return spikes * source.spike_amplitude


def _if_step(layer: SpikingLayer, v: torch.Tensor, current: torch.Tensor,
             reset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One IF update: (new potential, spikes as float32 0/1)."""
    v = v + current
    s = (v >= layer.threshold).to(torch.float32)
    if reset == "subtract":
        v = v - s * layer.threshold
    else:
        v = torch.where(s > 0, torch.zeros_like(v), v)
    return v, s


@torch.no_grad()
def simulate(
    net: SpikingNetwork,
    x: torch.Tensor,
    labels: torch.Tensor,
    time: int,
    propagation: str = "same-step",
    reset: str = "subtract",
    v0: str = "zero",
    encoding: str = "constant",
    seed: int = 0,
    batch_index: int = 0,
) -> ReferenceCounts:
    assert propagation in ("same-step", "delayed") and reset in ("subtract", "zero")
    assert v0 in ("zero", "half") and encoding in ("constant", "poisson")
    layers, output, batch = net.layers[:-1], net.layers[-1], x.shape[0]
    potentials = [torch.zeros((batch, *layer.shape), dtype=torch.float32)
                  + (layer.threshold / 2 if v0 == "half" else 0)
                  + (0 if layer.v_init is None else layer.v_init) for layer in layers]
    # emitted[j][t]: what source j (0: the input, i + 1: spiking layer i) sent out at step t
    emitted: list[list[torch.Tensor]] = [[] for _ in net.layers]
    output_sum = torch.zeros((batch, *output.shape))

    correct = torch.zeros(time, dtype=torch.long)
    spikes = torch.zeros(len(layers), time, dtype=torch.float64)
    synops = torch.zeros(len(layers), time, dtype=torch.float64)

    def arriving(j: int, t: int) -> torch.Tensor:
        """What net.layers[j] receives at step t from its source (emitted[j])."""
        lag = net.layers[j].delay if propagation == "delayed" else 0
        if t - lag < 0:
            return torch.zeros_like(emitted[j][t])
        return emitted[j][t - lag]

    for t in range(time):
        if encoding == "constant":
            emitted[0].append(x)
        else:
            emitted[0].append(poisson_step(x, net.input_scale, seed, batch_index, t))
        for i, layer in enumerate(layers):
            incoming = arriving(i, t)
            potentials[i], s = _if_step(layer, potentials[i], _current(layer, incoming), reset)
            emitted[i + 1].append(_carried(layer, s))
            spikes[i, t] = float(s.sum())
            fan_out = layer.fan_out.double()
            synops[i, t] = float((s.reshape(batch, -1).double() * fan_out).sum())
        output_sum = output_sum + _current(output, arriving(len(layers), t))
        predicted = output_sum.reshape(batch, -1).argmax(dim=1)
        correct[t] = int((predicted == labels).sum())
    return ReferenceCounts(correct, spikes, synops)
