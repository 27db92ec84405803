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

Precision (`SimOptions.precision`): layer currents are float32, and full-precision layers stay
IEEE float32 on CUDA too (cuDNN's own default for convolutions is TF32) unless `tf32` is asked
for. A layer of +-1 weights fed 0/1 spikes (`--binary-weights sign`) may take float16 exactly:
see `ExactHalf`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bsnn.snn.encoding import poisson_steps
from bsnn.snn.network import SpikingLayer, SpikingNetwork
from bsnn.snn.options import SimOptions


@dataclass
class BatchCounts:
    """One batch's counters: correct predictions per step, spikes and synops per layer/step."""

    correct: torch.Tensor  # (T,) int64
    spikes: torch.Tensor  # (spiking layers, T) float64
    synops: torch.Tensor  # (spiking layers, T) float64
    totals: list[torch.Tensor] | None = None  # per layer (B, *shape) spikes over T, if asked


CPU_CONV_BATCH = 32  # images per conv call below which chunking pays on CPU


def choose_chunk(net: SpikingNetwork, batch: int, time: int, device: torch.device,
                 budget_bytes: int = 256 << 20) -> int:
    """Steps per chunk. On CPU enough steps that each conv call sees at least 32 images: small
    batches leave mkldnn's convolutions underused (measured in turns, medians: vgg8ab batch 8
    at T=32 took 0.52 s a batch in 1-step chunks, 0.25 s in 4; vgg15ab batch 8 went from 1.14x
    to 0.87x the dense floor), while at batch 32 the IF work runs fastest one step at a time,
    its maps in cache (vgg8ab: 2 steps 13 % slower; vgg15ab: 10 % faster, not taken). On CUDA
    the largest chunk whose widest layer's spike and current maps fit the budget: fewer,
    bigger kernel launches."""
    if device.type != "cuda":
        return max(1, min(time, -(-CPU_CONV_BATCH // batch)))
    widest = max(layer.neurons for layer in net.layers)
    per_step = 2 * 4 * widest * batch  # spikes + currents, float32
    return max(1, min(time, budget_bytes // max(per_step, 1)))


HALF_EXACT = 2048  # float16 holds every integer of magnitude <= 2**11
_SPIKE_PRESERVING = (nn.Flatten, nn.Dropout, nn.Identity)  # 0/1 in, 0/1 out


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


def _is_sign_op(op: nn.Module) -> bool:
    """A plain conv or linear whose weights are all +-1 (its forward then is F.conv2d/linear
    with them, binary layers included: sign(w) x mean|w| = w)."""
    if isinstance(op, nn.Conv2d):
        if op.groups != 1 or op.padding_mode != "zeros" or isinstance(op.padding, str):
            return False
    elif not isinstance(op, nn.Linear):
        return False
    return op.bias is None and bool(op.weight.detach().abs().eq(1).all())


def half_exact_ops(layer: SpikingLayer, spikes_in: bool) -> nn.Sequential | None:
    """`layer.ops` with its +-1 conv or linear made `ExactHalf`, or None where float16 would
    not be exact: the input is not 0/1 spikes (`spikes_in` False: the analog image, or spikes
    of per-channel amplitudes) or something other than flatten/dropout comes before it."""
    if not spikes_in:
        return None
    ops = list(layer.ops)
    for i, op in enumerate(ops):
        if _is_sign_op(op):
            return nn.Sequential(*ops[:i], ExactHalf(op), *ops[i + 1:])
        if not isinstance(op, _SPIKE_PRESERVING):
            return None
    return None


@contextmanager
def fp32_precision(tf32: bool) -> Iterator[None]:
    """cuDNN convolutions and CUDA matmuls in IEEE float32, or TF32 when asked; restored
    after. Only torch's new flags are touched (mixing in the legacy ones is refused)."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


@dataclass
class HalfCurrent:
    """A layer's current with its +-1 conv or linear in exact float16 (`half_exact_ops`)."""

    ops: nn.Sequential
    bias: torch.Tensor | None

    def __call__(self, incoming: torch.Tensor) -> torch.Tensor:
        out = self.ops(incoming)
        return out if self.bias is None else out + self.bias


def layer_currents(net: SpikingNetwork, precision: str,
                   device: torch.device) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Each layer's current function: `layer.current`, or a HalfCurrent where the precision
    asks for float16 on this device and it is exact. On CPU `auto` keeps float32: float16
    convolutions are many times slower there (24x measured on AVX2)."""
    half = precision == "fp16" or (precision in ("auto", "tf32") and device.type == "cuda")
    out: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for i, layer in enumerate(net.layers):
        spikes_in = i > 0 and net.layers[i - 1].spike_amplitude is None
        ops = half_exact_ops(layer, spikes_in) if half else None
        out.append(layer.current if ops is None else HalfCurrent(ops, layer.bias))
    return out


def _initial_potential(layer: SpikingLayer, batch: int, v0: str, like: torch.Tensor):
    v = torch.zeros((batch, *layer.shape), dtype=like.dtype, device=like.device)
    if v0 == "half":
        v += layer.threshold / 2
    if layer.v_init is not None:
        v += layer.v_init
    return v


def _integrate(v: torch.Tensor, currents: torch.Tensor, threshold: torch.Tensor,
               reset: str, spikes: torch.Tensor, fired: torch.Tensor) -> None:
    """IF over the chunk's steps: integrate, spike at v >= theta, reset; spikes written out.

    `fired` is a bool scratch of v's shape: comparing into it and then copying is the fastest
    unfused form measured on CPU (about 25 % faster than `spikes[i].copy_(v >= theta)`).
    """
    for i in range(currents.shape[0]):
        v += currents[i]
        torch.ge(v, threshold, out=fired)
        spikes[i].copy_(fired)
        if reset == "subtract":
            v.addcmul_(spikes[i], threshold, value=-1.0)
        else:
            v.masked_fill_(fired, 0.0)


class Engine:
    """Simulates batches of a converted network for T steps; see the module docstring."""

    def __init__(self, net: SpikingNetwork, options: SimOptions) -> None:
        self.net = net
        self.opt = options
        self._currents: dict[torch.device, list[Callable[[torch.Tensor], torch.Tensor]]] = {}

    def currents(self, device: torch.device) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        """The layers' current functions for `device` (made once per device)."""
        if device not in self._currents:
            self._currents[device] = layer_currents(self.net, self.opt.precision, device)
        return self._currents[device]

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
        return first.current(enc.flatten(0, 1)).view(k, x.shape[0], *first.shape)

    @torch.no_grad()
    def run_batch(self, x: torch.Tensor, labels: torch.Tensor, batch_index: int = 0,
                  keep_totals: bool = False) -> BatchCounts:
        """Simulate one batch; `keep_totals` also returns every neuron's spike count."""
        with fp32_precision(self.opt.precision == "tf32"):
            return self._run_batch(x, labels, batch_index, keep_totals)

    def _run_batch(self, x: torch.Tensor, labels: torch.Tensor, batch_index: int,
                   keep_totals: bool) -> BatchCounts:
        net, opt = self.net, self.opt
        current = self.currents(x.device)
        T, B = opt.time, x.shape[0]
        layers, output = net.spiking, net.output
        delayed = opt.propagation == "delayed"
        chunk = opt.time_chunk or choose_chunk(net, B, T, x.device)
        dev, dtype = x.device, x.dtype

        correct = torch.zeros(T, dtype=torch.long, device=dev)
        spikes = torch.zeros(len(layers), T, dtype=torch.float64, device=dev)
        synops = torch.zeros(len(layers), T, dtype=torch.float64, device=dev)
        v = [_initial_potential(layer, B, opt.v0, x) for layer in layers]
        fired = [torch.empty(t.shape, dtype=torch.bool, device=dev) for t in v]
        totals = [torch.zeros_like(t) for t in v] if keep_totals else None
        held = [torch.zeros((nxt.delay, B, *layer.shape), dtype=dtype, device=dev)
                for layer, nxt in zip(layers, net.layers[1:], strict=True)] if delayed else []
        out_sum = torch.zeros((B, *output.shape), dtype=dtype, device=dev)
        first = layers[0]
        constant_current = first.current(x) if opt.encoding == "constant" else None
        rest_current = first.current(torch.zeros_like(x[:1]))  # the bias alone

        for t0 in range(0, T, chunk):
            steps = range(t0, min(T, t0 + chunk))
            k = len(steps)
            currents = self._input_currents(x, steps, constant_current, rest_current,
                                            batch_index)
            for i, layer in enumerate(layers):
                s = torch.empty((k, B, *layer.shape), dtype=dtype, device=dev)
                _integrate(v[i], currents, layer.threshold, opt.reset, s, fired[i])
                if totals is not None:
                    totals[i] += s.sum(0)
                per_neuron = s.view(k, B, -1).sum(1)  # (k, neurons)
                spikes[i, t0:t0 + k] = per_neuron.sum(1, dtype=torch.float64)
                synops[i, t0:t0 + k] = per_neuron.double() @ layer.fan_out.double()
                if delayed:  # what the next layer receives: spikes of `delay` steps earlier
                    both = torch.cat([held[i], s])
                    s, held[i] = both[:k], both[k:]
                if layer.spike_amplitude is not None:
                    s = s * layer.spike_amplitude
                nxt = layers[i + 1] if i + 1 < len(layers) else output
                currents = current[i + 1](s.flatten(0, 1)).view(k, B, *nxt.shape)
            if t0 < opt.readout_delay:
                currents = currents.clone()
                currents[: opt.readout_delay - t0] = 0
            running = out_sum + currents.cumsum(0)
            out_sum = running[-1]
            predicted = running.flatten(2).argmax(-1)  # (k, B)
            correct[t0:t0 + k] = (predicted == labels[None]).sum(1)
        return BatchCounts(correct, spikes, synops, totals)
