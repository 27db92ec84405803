"""The engine's fast paths are exact: float16 on +-1 layers gives float32's sums bit for bit,
TF32 is used only when asked for, and nothing in the time loop waits for the host.

They run on CPU where they can (float16 convolutions exist there, only slower); the CUDA-only
checks skip without a device and run in benchmarks/gpu_check.sh.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from bsnn.conversion import convert
from bsnn.models import build_model
from bsnn.snn.engine import (
    HALF_EXACT,
    Engine,
    ExactHalf,
    HalfCurrent,
    fp32_precision,
    half_exact_ops,
    layer_currents,
)
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

pytestmark = pytest.mark.usefixtures("one_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)


def test_one_float16_conv_rounds_above_2048() -> None:
    """Why the groups: 4607 ones summed by a single float16 conv come back as 4608."""
    x = torch.ones(1, 512, 3, 3)
    x[0, 0, 0, 0] = 0  # 4607 active inputs at the centre: an odd sum
    w = torch.ones(1, 512, 3, 3)
    exact = F.conv2d(x, w)
    assert float(exact) == 4607
    assert float(F.conv2d(x.half(), w.half())) == 4608
    conv = nn.Conv2d(512, 1, 3, bias=False)
    conv.weight.data = w
    assert torch.equal(ExactHalf(conv)(x), exact)


@pytest.mark.parametrize(("channels", "kernel", "groups"), [(64, 3, 1), (256, 3, 2), (512, 3, 3),
                                                            (300, 1, 1), (5000, 1, 3)])
def test_exact_half_conv_equals_float32(channels: int, kernel: int, groups: int) -> None:
    gen = torch.Generator().manual_seed(channels)
    conv = nn.Conv2d(channels, 8, kernel, padding=kernel // 2, stride=1, bias=False)
    conv.weight.data = _signs(tuple(conv.weight.shape), gen)
    half = ExactHalf(conv)
    assert len(half.bounds) == groups
    assert all((b - a) * kernel * kernel <= HALF_EXACT for a, b in half.bounds)
    for density in (0.1, 0.5, 1.0):
        x = (torch.rand(3, channels, 5, 5, generator=gen) < density).float()
        out = half(x)
        assert out.dtype == torch.float32
        assert torch.equal(out, conv(x)), density


def test_exact_half_linear_equals_float32() -> None:
    gen = torch.Generator().manual_seed(1)
    linear = nn.Linear(25088, 16, bias=False)  # vgg15ab's fc1 at 224x224: 13 groups
    linear.weight.data = _signs(tuple(linear.weight.shape), gen)
    half = ExactHalf(linear)
    assert len(half.bounds) == 13
    x = (torch.rand(4, 25088, generator=gen) < 0.3).float()
    assert torch.equal(half(x), linear(x))


def _sign_network(width: float = 8.0) -> tuple[SpikingNetwork, torch.Tensor, torch.Tensor]:
    """A random binary vgg6ab (digits' 8x8), wide enough for several float16 groups, converted
    with --binary-weights sign."""
    torch.manual_seed(0)
    model = build_model("vgg6ab", 10, (1, 8, 8), binary=True, width=width).eval()
    images = torch.rand(24, 1, 8, 8)
    net = convert(model, lambda: [images[:12], images[12:]], 99.7,
                  binary_weights="sign").network
    x = torch.rand(4, 1, 8, 8)
    return net, x, torch.arange(4)


def test_which_layers_take_float16() -> None:
    """Only +-1 layers fed 0/1 spikes: never the first (the analog image) nor the output's
    full-precision weights; `auto` keeps float32 on CPU."""
    net, _, _ = _sign_network(width=1.0)
    cpu = torch.device("cpu")
    half = [isinstance(f, HalfCurrent) for f in layer_currents(net, "fp16", cpu)]
    assert half == [False] + [layer.binary for layer in net.layers[1:-1]] + [False]
    assert any(half)
    for precision in ("auto", "fp32", "tf32"):
        assert not any(isinstance(f, HalfCurrent) for f in layer_currents(net, precision, cpu))
    layer = net.layers[1]
    assert half_exact_ops(layer, spikes_in=False) is None  # spikes of per-channel amplitudes
    alpha = dataclasses.replace(layer, ops=nn.Sequential(*[
        _scaled(op) if isinstance(op, nn.Conv2d) else op for op in layer.ops]))
    assert half_exact_ops(alpha, spikes_in=True) is None  # weights +-alpha, not +-1
    pooled = dataclasses.replace(layer, ops=nn.Sequential(nn.AvgPool2d(2), *layer.ops))
    assert half_exact_ops(pooled, spikes_in=True) is None  # averaged spikes are not 0/1


def _scaled(conv: nn.Conv2d) -> nn.Conv2d:
    out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                    padding=conv.padding, bias=False)
    out.weight.data = conv.weight.detach() * 0.37
    return out


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
def test_engine_float16_counts_equal_float32(propagation: str) -> None:
    net, x, y = _sign_network()
    runs = {}
    for precision in ("fp32", "fp16"):
        engine = Engine(net, SimOptions(16, propagation, precision=precision))
        runs[precision] = engine.run_batch(x, y)
    groups = [len(op.bounds) for f in engine.currents(x.device) if isinstance(f, HalfCurrent)
              for op in f.ops if isinstance(op, ExactHalf)]
    assert max(groups) > 1, groups  # the wide layers were split
    a, b = runs["fp32"], runs["fp16"]
    assert a.spikes.sum() > 0
    assert torch.equal(a.spikes, b.spikes) and torch.equal(a.synops, b.synops)
    assert torch.equal(a.correct, b.correct)


def test_fp32_precision_sets_and_restores_the_flags() -> None:
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    with fp32_precision(tf32=False):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    with fp32_precision(tf32=True):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
    assert (conv.fp32_precision, matmul.fp32_precision) == before


class _Recorder(TorchDispatchMode):
    """Every aten op called, by name."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops.add(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


# ops that copy a value to the host (or size an output by the data): on CUDA each one waits
HOST_SYNCS = {"aten._local_scalar_dense", "aten.nonzero", "aten.masked_select",
              "aten.is_nonzero", "aten.unique_dim", "aten._unique2", "aten.equal"}


@pytest.mark.parametrize("options", [
    SimOptions(8), SimOptions(8, "delayed", "zero", "half", "poisson", readout_delay=3),
    SimOptions(8, precision="fp16", time_chunk=3)])
def test_no_host_sync_inside_a_batch(options: SimOptions) -> None:
    """Counters stay on the device until the batch ends: no op of a batch reads a value back."""
    net, x, y = _sign_network(width=1.0)
    engine = Engine(net, options)
    engine.run_batch(x, y)  # the layers' current functions are made outside the loop
    with _Recorder() as rec:
        engine.run_batch(x, y)
    assert "aten.convolution" in rec.ops  # the recorder sees the engine's ops
    assert not rec.ops & HOST_SYNCS, rec.ops & HOST_SYNCS


@needs_cuda
def test_no_host_sync_on_cuda() -> None:
    net, x, y = _sign_network(width=1.0)
    engine = Engine(net.to("cuda"), SimOptions(8))
    x, y = x.cuda(), y.cuda()
    engine.run_batch(x, y)
    torch.cuda.set_sync_debug_mode("error")
    try:
        engine.run_batch(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
def test_cuda_float16_counts_equal_cpu_float32() -> None:
    """`auto` on CUDA takes float16 on the +-1 layers; the counts are CPU float32's."""
    net, x, y = _sign_network()
    cpu = Engine(net, SimOptions(16, precision="fp32")).run_batch(x, y)
    engine = Engine(net.to("cuda"), SimOptions(16))
    x_cuda = x.cuda()
    cuda = engine.run_batch(x_cuda, y.cuda())
    assert any(isinstance(f, HalfCurrent) for f in engine.currents(x_cuda.device))
    assert torch.equal(cuda.spikes.cpu(), cpu.spikes)
    assert torch.equal(cuda.correct.cpu(), cpu.correct)
