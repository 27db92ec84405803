"""The fast simulation engine: IF neurons, time-chunked layer by layer.

Within a chunk of k time steps each layer is done before the next: its input currents for all k
steps come from one batched conv/linear call on (k x batch) spike maps, then the IF recurrence
runs over the k steps elementwise, and the layer's membrane state carries to the next chunk.
k = 1 is plain step-by-step; larger k trades memory for fewer, bigger kernel calls. Both
propagation modes fit this scheme: `delayed` only shifts the spike train a layer receives by its
`delay` (the steps the original's BindsNET network takes to bring it: one per conv, linear and
pooling layer there), holding back that many steps of its source's spikes across chunks.
Only running counters are kept (spikes and synaptic operations per layer and step, correct
predictions per step), never rasters, and they stay on the device until the batch ends: nothing
in the time loop waits for the host.

Precision (`SimOptions.precision`, bsnn.snn.precision): layer currents are float32; +-1 layers
fed 0/1 spikes may sum exactly in float16 (CUDA) or int8 (CPU), the same sums bit for bit;
`Engine.arithmetic` says which each layer ran. Around an int8 layer the engine lays its maps
out channels-last (oneDNN's layout for them) and writes the spikes that feed one as int8, so
the kernels take them as they are. On CPU the currents of big maps (16x16 and up) are made a
few images at a time, whatever the chunk, to bound the transient maps. A batch runs with
denormals flushed (`flush_denormals`, on every intra-op thread).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from bsnn.snn.denormals import flush_denormals
from bsnn.snn.encoding import poisson_steps
from bsnn.snn.exact import HALF_EXACT, ExactHalf, HalfCurrent, half_exact_ops
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions
from bsnn.snn.precision import ARITHMETIC, LayerPath, fp32_precision, layer_currents, plan_currents
from bsnn.snn.totals import SpikeTotals

__all__ = ["ARITHMETIC", "HALF_EXACT", "BatchCounts", "Engine", "ExactHalf", "HalfCurrent",
           "choose_chunk", "flush_denormals", "fp32_precision", "half_exact_ops",
           "layer_currents"]


@dataclass
class BatchCounts:
    """One batch's counters: correct predictions per step, spikes and synops per layer/step."""

    correct: torch.Tensor  # (T,) int64
    spikes: torch.Tensor  # (spiking layers, T) float64
    synops: torch.Tensor  # (spiking layers, T) float64
    totals: list[torch.Tensor] | None = None  # per layer (B, *shape) spikes over T, if asked


CPU_CONV_BATCH = 32  # images per conv call below which chunking pays on CPU
CPU_INT8_BATCH = 64  # the same where layers run int8


def choose_chunk(net: SpikingNetwork, batch: int, time: int, device: torch.device,
                 budget_bytes: int = 256 << 20, int8: bool = False) -> int:
    """Steps per chunk. On CPU enough steps that each conv call sees at least 32 images: small
    batches leave mkldnn's convolutions underused (measured in turns, medians: vgg8ab batch 8
    at T=32 took 0.52 s a batch in 1-step chunks, 0.25 s in 4; vgg15ab batch 8 went from 1.14x
    to 0.87x the dense floor), while at batch 32 the IF work runs fastest one step at a time,
    its maps in cache (vgg8ab: 2 steps 13 % slower; vgg15ab: 10 % faster, not taken). On CUDA
    the largest chunk whose widest layer's spike and current maps fit the budget: fewer,
    bigger kernel launches. Where layers run int8 (`int8`), 64 images a call on CPU: the int8
    kernels are so much cheaper that their fixed costs and the threads' synchronisation per
    call show (binary vgg15ab at T=16, two threads, best of 5 in turns: batch 32 0.49 s in
    1-step chunks, 0.42 in 2, 0.40 in 3; batch 16 0.26 in 2 steps, 0.23 in 4, 0.24 in 8)."""
    if device.type != "cuda":
        images = CPU_INT8_BATCH if int8 else CPU_CONV_BATCH
        return max(1, min(time, -(-images // batch)))
    widest = max(layer.neurons for layer in net.layers)
    per_step = 2 * 4 * widest * batch  # spikes + currents, float32
    return max(1, min(time, budget_bytes // max(per_step, 1)))


def _maps(lead: tuple[int, ...], shape: tuple[int, ...], dtype: torch.dtype,
          device: torch.device, channels_last: bool) -> torch.Tensor:
    """An empty (*lead, *shape) tensor; channels-last (C innermost in memory) where asked, so
    that (*lead) flattened is a channels-last batch of maps, a view."""
    if not channels_last:
        return torch.empty((*lead, *shape), dtype=dtype, device=device)
    c, h, w = shape
    return torch.empty((*lead, h, w, c), dtype=dtype, device=device).movedim(-1, -3)


def _in_memory_order(t: torch.Tensor, ndim: int, channels_last: bool) -> torch.Tensor:
    """(..., *neuron shape) as (..., neurons) in the order of its memory (a view of `_maps`)."""
    return (t.movedim(-3, -1) if channels_last else t).flatten(-ndim)


@dataclass
class _Plan:
    """How a network runs on one device: each layer's current function and arithmetic, and
    per spiking layer the layout of its maps, the dtype of its outgoing spikes (int8 where
    the next layer takes int8, else None: the input's) and its fan-out in memory order."""

    paths: list[LayerPath]
    channels_last: list[bool]
    spike_dtype: list[torch.dtype | None]
    fan_out: list[torch.Tensor]  # float64


def _make_plan(net: SpikingNetwork, precision: str, device: torch.device) -> _Plan:
    """Maps are channels-last around int8 layers (their kernels' layout, in and out)."""
    paths = plan_currents(net, precision, device)
    int8 = [path.arithmetic == "int8-exact" for path in paths]
    spiking = net.spiking
    cl = [len(layer.shape) == 3 and (int8[i] or int8[i + 1]) for i, layer in enumerate(spiking)]
    fan_out = [_in_memory_order(layer.fan_out.to(device).view(layer.shape), len(layer.shape),
                                c).double() for layer, c in zip(spiking, cl, strict=True)]
    return _Plan(paths, cl, [torch.int8 if int8[i + 1] else None for i in range(len(spiking))],
                 fan_out)


def _fire(v: torch.Tensor, threshold: torch.Tensor, reset: str, s: torch.Tensor,
          out: torch.Tensor, counts: torch.Tensor, total: torch.Tensor | None,
          channels_last: bool, add: bool = False) -> None:
    """One step's spikes of integrated potentials `v`: compared into the float map `s`, reset,
    copied to `out` (unless `s` is it), summed over the batch into `counts` (added to it with
    `add`) and added to `total`. Reset to zero is v - v * s, exact (v - v = +0)."""
    torch.ge(v, threshold, out=s)
    if reset == "subtract":
        v.addcmul_(s, threshold, value=-1.0)
    else:
        v.addcmul_(v, s, value=-1.0)
    if out is not s:
        out.copy_(s)
    flat = _in_memory_order(s, v.dim() - 1, channels_last)
    if add:
        counts.add_(flat.sum(0))
    else:
        torch.sum(flat, 0, out=counts)
    if total is not None:
        total.add_(out.view(torch.uint8) if total.dtype == torch.uint8 else s)


def _integrate(v: torch.Tensor, currents: torch.Tensor, threshold: torch.Tensor, reset: str,
               spikes: torch.Tensor, counts: torch.Tensor, scratch: torch.Tensor | None,
               total: torch.Tensor | None, channels_last: bool) -> None:
    """IF over the chunk's steps: integrate, spike at v >= theta, reset; the spikes written
    out, each step's spikes per neuron (summed over the batch, in memory order) into `counts`,
    and added to `total` where given.

    The comparison writes float 0/1 straight into the spike map (which may be `currents`
    itself: each step's current is spent once added); where the spikes leave as int8, into the
    step's spent current, then converted; where that is the constant input's view (no room),
    into `scratch`, a float map of a few images, block by block. Measured for 2 M neurons:
    torch compares into a float output vectorised and into bool or int8 not (0.8 ms against
    3 ms, plus 3 ms to copy the bools to float; AVX-512 and AVX2 alike), and converts float
    to int8 vectorised, not to uint8 (0.5 against 2 ms); comparing the first layer of binary
    vgg15ab straight into int8 took 40 % of an int8 batch."""
    narrow = spikes.dtype != v.dtype
    for i in range(currents.shape[0]):
        v += currents[i]
        out = spikes[i]
        if scratch is None:
            _fire(v, threshold, reset, currents[i] if narrow else out, out, counts[i], total,
                  channels_last)
            continue
        rows = scratch.shape[0]
        for a in range(0, v.shape[0], rows):
            b = min(v.shape[0], a + rows)
            _fire(v[a:b], threshold, reset, scratch[:b - a], out[a:b], counts[i],
                  None if total is None else total[a:b], channels_last, add=a > 0)


SCRATCH_IMAGES = 4  # images per block where the first layer's spikes leave as int8
BIG_MAP = 256  # positions per channel from which a current is made in pieces
BIG_MAP_IMAGES = 8  # images per piece


def _currents(current: Callable[[torch.Tensor], torch.Tensor],
              incoming: torch.Tensor) -> torch.Tensor:
    """`current(incoming)`, on CPU over BIG_MAP_IMAGES images a call where the maps are big,
    filled into one output: their convs cost about the same per image at 8 as at 64 images
    (measured in turns on full-precision vgg15ab, batch 32: within the noise), while larger
    chunks (which the small maps' calls gain from) would grow the transient maps with them
    (binary vgg15ab, batch 32: peak 49 -> 43 MB, against 24 MB for the ANN)."""
    n = incoming.shape[0]
    if (incoming.device.type != "cpu" or incoming.dim() < 4 or n <= BIG_MAP_IMAGES
            or incoming[0, 0].numel() < BIG_MAP):
        return current(incoming)
    out: torch.Tensor | None = None
    for a in range(0, n, BIG_MAP_IMAGES):  # filled piece by piece: no list of pieces to join
        piece = current(incoming[a:a + BIG_MAP_IMAGES])
        if out is None:
            cl = piece.dim() == 4 and not piece.is_contiguous()
            out = torch.empty((n, *piece.shape[1:]), dtype=piece.dtype, device=piece.device,
                              memory_format=torch.channels_last if cl else torch.contiguous_format)
        out[a:a + piece.shape[0]] = piece
    assert out is not None
    return out


@dataclass
class _Batch:
    """One batch's state, carried from chunk to chunk."""

    v: list[torch.Tensor]  # membrane potentials
    held: list[torch.Tensor]  # delayed: spikes held back for the next layer
    scratch: torch.Tensor | None  # the first layer's float spikes, a few images at a time
    spikes: torch.Tensor  # (spiking layers, T) float64
    synops: torch.Tensor
    correct: torch.Tensor  # (T,)
    out_sum: torch.Tensor  # the output's summed current
    totals: SpikeTotals | None


def _device_of(net: SpikingNetwork) -> torch.device:
    for layer in net.layers:
        for t in (*layer.ops.parameters(), layer.threshold, layer.bias):
            if t is not None:
                return t.device
    return torch.device("cpu")


class Engine:
    """Simulates batches of a converted network for T steps; see the module docstring."""

    def __init__(self, net: SpikingNetwork, options: SimOptions) -> None:
        self.net = net
        self.opt = options
        self._plans: dict[torch.device, _Plan] = {}
        if options.precision == "int8":
            self._plan(_device_of(net))  # refused now rather than at the first batch

    def _plan(self, device: torch.device) -> _Plan:
        if device not in self._plans:
            self._plans[device] = _make_plan(self.net, self.opt.precision, device)
        return self._plans[device]

    def currents(self, device: torch.device) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The layers' current functions for `device` (made once per device)."""
        return [path.current for path in self._plan(device).paths]

    def arithmetic(self, device: torch.device | None = None) -> list[str]:
        """Per layer (in `net.layers` order) the arithmetic of its current on `device` (the
        network's by default): one of ARITHMETIC ("fp32", "tf32", "fp16-exact",
        "int8-exact"). The same figures whichever, bit for bit, but for "tf32"."""
        device = _device_of(self.net) if device is None else torch.device(device)
        return [path.arithmetic for path in self._plan(device).paths]

    def _input_currents(self, x: torch.Tensor, steps: range, constant: torch.Tensor | None,
                        rest: torch.Tensor, batch_index: int) -> torch.Tensor:
        """Currents into the first layer for `steps`: (steps, batch, *first layer's shape)."""
        first, k = self.net.spiking[0], len(steps)
        lag = first.delay if self.opt.propagation == "delayed" else 0
        early = min(k, max(0, lag - steps.start))  # steps before the input arrives: bias alone
        if constant is not None:
            currents = constant.expand(k, *constant.shape)
            if early:
                currents = currents.clone()
                currents[:early] = rest
            return currents
        source = range(steps.start + early - lag, steps.stop - lag)
        enc = poisson_steps(x, self.net.input_scale, self.opt.seed, batch_index, source)
        if early:
            enc = torch.cat([x.new_zeros((early, *x.shape)), enc])
        currents = first.current(enc.flatten(0, 1))  # laid out as float32's path has it
        if self._plan(x.device).channels_last[0]:
            currents = currents.contiguous(memory_format=torch.channels_last)
        return currents.view(k, x.shape[0], *first.shape)

    @torch.no_grad()
    def run_batch(self, x: torch.Tensor, labels: torch.Tensor, batch_index: int = 0,
                  keep_totals: bool = False) -> BatchCounts:
        """Simulate one batch; `keep_totals` also returns every neuron's spike count."""
        with fp32_precision(self.opt.precision == "tf32"), flush_denormals():
            return self._run_batch(x, labels, batch_index, keep_totals)

    def _new_batch(self, x: torch.Tensor, plan: _Plan, chunk: int, keep_totals: bool) -> _Batch:
        layers, dev, B, T = self.net.spiking, x.device, x.shape[0], self.opt.time
        v = [_maps((B,), layer.shape, x.dtype, dev, cl).zero_()
             for layer, cl in zip(layers, plan.channels_last, strict=True)]
        for t, layer in zip(v, layers, strict=True):
            if self.opt.v0 == "half":
                t += layer.threshold / 2
            if layer.v_init is not None:
                t += layer.v_init
        held = [_maps((nxt.delay, B), layer.shape, plan.spike_dtype[i] or x.dtype, dev,
                      plan.channels_last[i]).zero_()
                for i, (layer, nxt) in enumerate(zip(layers, self.net.layers[1:], strict=True))
                ] if self.opt.propagation == "delayed" else []
        narrow = [d is not None and chunk <= 255 for d in plan.spike_dtype]
        return _Batch(
            v=v, scratch=None if plan.spike_dtype[0] is None else _maps(
                (min(B, SCRATCH_IMAGES),), layers[0].shape, x.dtype, dev, plan.channels_last[0]),
            held=held,
            spikes=torch.zeros(len(layers), T, dtype=torch.float64, device=dev),
            synops=torch.zeros(len(layers), T, dtype=torch.float64, device=dev),
            correct=torch.zeros(T, dtype=torch.long, device=dev),
            out_sum=torch.zeros((B, *self.net.output.shape), dtype=x.dtype, device=dev),
            totals=SpikeTotals(v, narrow) if keep_totals else None)

    def _run_batch(self, x: torch.Tensor, labels: torch.Tensor, batch_index: int,
                   keep_totals: bool) -> BatchCounts:
        plan, T = self._plan(x.device), self.opt.time
        int8 = any(path.arithmetic == "int8-exact" for path in plan.paths)
        chunk = self.opt.time_chunk or choose_chunk(self.net, x.shape[0], T, x.device,
                                                    int8=int8)
        state = self._new_batch(x, plan, chunk, keep_totals)
        first = self.net.spiking[0]
        constant = first.current(x) if self.opt.encoding == "constant" else None  # once
        if constant is not None and plan.channels_last[0]:
            constant = constant.contiguous(memory_format=torch.channels_last)
        delayed = self.opt.propagation == "delayed"  # steps before the input: the bias alone
        rest = first.current(torch.zeros_like(x[:1])) if delayed else x.new_zeros(())
        for t0 in range(0, T, chunk):
            steps = range(t0, min(T, t0 + chunk))
            currents = self._input_currents(x, steps, constant, rest, batch_index)
            owned = constant is None or currents.data_ptr() != constant.data_ptr()
            out = self._through_layers(currents, owned, steps, plan, state)
            self._read_out(out, steps, labels, state)
        totals = None if state.totals is None else state.totals.result()
        return BatchCounts(state.correct, state.spikes, state.synops, totals)

    def _through_layers(self, currents: torch.Tensor, owned: bool, steps: range, plan: _Plan,
                        state: _Batch) -> torch.Tensor:
        """A chunk through every spiking layer; returns the output layer's currents. `owned`:
        the first layer's currents may be written over (not the constant input's view)."""
        k, t0, B = len(steps), steps.start, currents.shape[1]
        dev, dtype = currents.device, currents.dtype
        totals = None if state.totals is None else state.totals.counters(k)
        for i, layer in enumerate(self.net.spiking):
            cl, out_dtype = plan.channels_last[i], plan.spike_dtype[i]
            held = state.held[i] if state.held else None
            if held is not None:  # the held spikes, then this chunk's: what the next layer hears
                lag = held.shape[0]
                sent = _maps((lag + k, B), layer.shape, out_dtype or dtype, dev, cl)
                sent[:lag] = held
                s = sent[lag:]
            else:
                s = currents if owned and out_dtype is None else _maps(
                    (k, B), layer.shape, out_dtype or dtype, dev, cl)
            counts = torch.empty((k, layer.neurons), dtype=dtype, device=dev)
            scratch = None if owned or out_dtype is None else state.scratch
            _integrate(state.v[i], currents, layer.threshold, self.opt.reset, s, counts,
                       scratch, None if totals is None else totals[i], cl)
            del currents  # freed before the next layer's are made
            owned = True  # every later layer's currents are its own
            state.spikes[i, t0:t0 + k] = counts.sum(1, dtype=torch.float64)
            state.synops[i, t0:t0 + k] = counts.double() @ plan.fan_out[i]
            if held is not None:  # the last `lag` steps' spikes wait for the next chunk
                state.held[i] = sent[k:].clone()
                s = sent[:k]
            if layer.spike_amplitude is not None:
                s = s * layer.spike_amplitude
            incoming = s.flatten(0, 1)
            if cl and plan.spike_dtype[i] is None:  # a float op: as float32's path lays it out
                incoming = incoming.contiguous()
            currents = _currents(plan.paths[i + 1].current, incoming).view(
                k, B, *self.net.layers[i + 1].shape)
            del s, incoming
        return currents

    def _read_out(self, currents: torch.Tensor, steps: range, labels: torch.Tensor,
                  state: _Batch) -> None:
        """The output's running sum and each step's correct predictions."""
        k, t0, delay = len(steps), steps.start, self.opt.readout_delay
        if t0 < delay:
            currents = currents.clone()
            currents[: delay - t0] = 0
        running = state.out_sum + currents.cumsum(0)
        state.out_sum = running[-1]
        predicted = running.flatten(2).argmax(-1)  # (k, B)
        state.correct[t0:t0 + k] = (predicted == labels[None]).sum(1)
