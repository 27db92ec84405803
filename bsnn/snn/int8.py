"""The exact int8 path: +-1 layers fed 0/1 spikes through oneDNN's int8 kernels, on CPU.

A layer of +-1 weights (`--binary-weights sign`) fed 0/1 spikes sums integers. oneDNN's int8
convolution and linear (the kernels torch's x86 quantization lowers to) multiply uint8
activations by int8 weights and accumulate in int32; with every scale 1 and every zero point 0
they hand the sums back as float32, which is the float32 conv's result bit for bit (|sum| <=
fan-in < 2**24, exact in float32 whatever order float32 would have added in). On a CPU with
int8 dot-product units (AVX512-VNNI, AVX-VNNI, AMX) that is several times fewer cycles than
float32. The weights are packed once per engine (`Int8Conv`, `Int8Linear`); the engine writes
the spikes such a layer reads as int8 0/1 maps, channels-last, which the kernel takes as they
are (read as uint8: the same bytes).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from bsnn.snn.exact import SPIKE_PRESERVING, is_sign_op
from bsnn.snn.network import SpikingLayer

INT8_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")  # /proc/cpuinfo names of int8 dot units
_NO_INT8_ISAS = ("SSE41", "AVX", "AVX2", "AVX512_CORE")  # oneDNN ISA caps without them


class Refusal(NamedTuple):
    """Why int8 cannot serve (a layer, or this machine), and what to do instead."""

    reason: str
    fix: str


def _cpuinfo_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def cpu_int8_unit() -> str | None:
    """The int8 dot-product unit oneDNN may use on this CPU (one of INT8_FLAGS), or None.

    Asked of the kernel's flags and of torch's own probes (either may be missing: another OS,
    another torch), then of oneDNN's cap (ONEDNN_MAX_CPU_ISA): None where it is capped below
    them (int8 would run on AVX2's plain multiplies), and no AMX where the cap names none."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
           or "").strip().upper()
    if cap in _NO_INT8_ISAS:
        return None
    flags = _cpuinfo_flags()
    for name, probe in (("amx_int8", "_is_amx_tile_supported"),
                        ("avx512_vnni", "_is_vnni_supported")):
        try:
            if getattr(torch.cpu, probe)():
                flags.add(name)
        except (AttributeError, RuntimeError):
            pass
    if cap and "AMX" not in cap and cap not in ("ALL", "DEFAULT"):
        flags.discard("amx_int8")
    return next((flag for flag in INT8_FLAGS if flag in flags), None)


def _as_uint8(x: torch.Tensor) -> torch.Tensor:
    """0/1 spikes as uint8: int8 ones are viewed (the same bytes), others converted."""
    if x.dtype == torch.uint8:
        return x
    return x.view(torch.uint8) if x.dtype == torch.int8 else x.to(torch.uint8)


GEMM_POSITIONS = 16  # on AMX, output maps of at most this many positions: im2col and a matmul


def matmul_positions() -> int:
    """Output positions up to which a conv runs as im2col and oneDNN's int8 matmul.

    On AMX the matmul is the faster for maps of at most 16 positions (vgg15ab's 4x4 and 2x2 at
    32x32; one thread, batch 32, in turns: 512 channels at 2x2 1.8 ms against 6.3 ms, at 4x4
    5.0 against 7.5; at 8x8 the conv wins). With VNNI and no AMX the conv wins at every size
    (AMD EPYC, batch 64, 2 threads: 512 channels at 4x4 4.0 ms against 5.6, at 2x2 1.3 against
    1.5), so there it takes every map."""
    return GEMM_POSITIONS if cpu_int8_unit() == "amx_int8" else 0


def _matmul(x: torch.Tensor, packed: torch.Tensor, scale: torch.Tensor,
            zero: torch.Tensor) -> torch.Tensor:
    """oneDNN's uint8 x int8 matmul of (M, K) spikes by packed (N, K) weights: (M, N) float32."""
    return torch.ops.onednn.qlinear_pointwise(x, 1.0, 0, packed, scale, zero, None, 1.0, 0,
                                              torch.float32, "none", [], "")


class Int8Conv(nn.Module):
    """A +-1 conv as oneDNN's uint8 x int8 conv: int32 sums, handed back as float32.

    The weights are packed for each input shape met (a few per run: the chunk's batch, the
    last batch's): packed for no shape in particular, oneDNN reorders the 512-channel weights
    again on every call (0.5 ms each, seen with ONEDNN_VERBOSE=1). On AMX, small maps go
    through im2col and oneDNN's int8 matmul instead (`matmul_positions`)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.weight = conv.weight.detach().to(torch.int8)
        self.scale = torch.ones(self.weight.shape[0])
        self.zero = torch.zeros(self.weight.shape[0], dtype=torch.long)
        self.geometry = (list(conv.stride), list(conv.padding), list(conv.dilation))
        self.packed: dict[tuple[int, ...] | None, torch.Tensor] = {}
        self.matmul_positions = matmul_positions()

    def _pack(self, shape: tuple[int, ...] | None) -> torch.Tensor:
        """The weights packed for the conv on `shape`, or for the matmul (None)."""
        if shape not in self.packed:
            self.packed[shape] = (
                torch.ops.onednn.qlinear_prepack(self.weight.permute(0, 2, 3, 1).flatten(1),
                                                 None) if shape is None else
                torch.ops.onednn.qconv_prepack(self.weight, self.scale, 1.0, 0, *self.geometry,
                                               1, list(shape)))
        return self.packed[shape]

    def weight_bytes(self) -> int:
        """Bytes of int8 weights held: the plain copy and each packing."""
        return self.weight.numel() + sum(p.numel() for p in self.packed.values())

    def _out_size(self, size: tuple[int, int]) -> tuple[int, int]:
        stride, padding, dilation = self.geometry
        kernel = self.weight.shape[2:]
        return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1  # type: ignore[return-value]
                     for n, k, s, p, d in zip(size, kernel, stride, padding, dilation,
                                              strict=True))

    def _im2col(self, x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        """(N, C, H, W) channels-last -> (N * positions, kh * kw * C), C fastest."""
        (sh, sw), (ph, pw), (dh, dw) = self.geometry
        kh, kw = self.weight.shape[2:]
        padded = torch.nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))
        taps = [padded[:, i * dh:i * dh + (out[0] - 1) * sh + 1:sh,
                       j * dw:j * dw + (out[1] - 1) * sw + 1:sw]
                for i in range(kh) for j in range(kw)]
        return torch.stack(taps, dim=3).flatten(0, 2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _as_uint8(x).contiguous(memory_format=torch.channels_last)  # no-op from the engine
        out = self._out_size((x.shape[2], x.shape[3]))
        if out[0] * out[1] <= self.matmul_positions:
            y = _matmul(self._im2col(x, out), self._pack(None), self.scale, self.zero)
            return y.view(x.shape[0], *out, -1).permute(0, 3, 1, 2)  # channels-last
        return torch.ops.onednn.qconv2d_pointwise(
            x, 1.0, 0, self._pack(tuple(x.shape)), self.scale, self.zero, None, *self.geometry,
            1, 1.0, 0, torch.float32, "none", [], "")


class Int8Linear(nn.Module):
    """A +-1 linear as oneDNN's uint8 x int8 matmul: int32 sums, handed back as float32."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        w = linear.weight.detach()
        self.scale = torch.ones(w.shape[0])
        self.zero = torch.zeros(w.shape[0], dtype=torch.long)
        self.packed = torch.ops.onednn.qlinear_prepack(w.to(torch.int8), None)

    def weight_bytes(self) -> int:
        """Bytes of int8 weights held (packed)."""
        return self.packed.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = _as_uint8(x).reshape(-1, x.shape[-1]).contiguous()
        out = _matmul(flat, self.packed, self.scale, self.zero)
        return out.view(*x.shape[:-1], out.shape[-1])


@dataclass
class Int8Current:
    """A layer's current with its +-1 conv or linear in exact int8 (`int8_ops`)."""

    ops: nn.Sequential
    bias: torch.Tensor | None

    def __call__(self, incoming: torch.Tensor) -> torch.Tensor:
        out = self.ops(incoming)  # a new tensor: the kernel's output or an op's on it
        return out if self.bias is None else out.add_(self.bias)


@functools.cache
def _op_problem() -> str | None:
    """Why this torch build cannot run the int8 kernels exactly (None: it can), found by
    running a small conv and linear against float32 once per process."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN"
    gen = torch.Generator().manual_seed(0)
    conv, linear = nn.Conv2d(6, 5, 3, stride=2, padding=1, bias=False), nn.Linear(40, 7, False)
    x, v = ((torch.rand(shape, generator=gen) < 0.5).float() for shape in ((3, 6, 7, 7), (3, 40)))
    try:
        with torch.no_grad():
            for op in (conv, linear):
                op.weight.copy_(torch.rand(op.weight.shape, generator=gen).round() * 2 - 1)
            ok = torch.equal(Int8Conv(conv)(x), conv(x))
            ok &= torch.equal(Int8Linear(linear)(v), linear(v))
    except (AttributeError, RuntimeError, NotImplementedError) as e:
        return f"this torch build's oneDNN int8 ops fail ({type(e).__name__}: " \
               f"{str(e).splitlines()[0] if str(e) else ''})"
    return None if ok else "this torch build's int8 ops do not give float32's sums"


def int8_unavailable(device: torch.device) -> Refusal | None:
    """Why no layer can take int8 on `device` (None: layers may)."""
    fix = "use --precision auto (it takes int8 only where it can) or fp32"
    if device.type != "cpu":
        return Refusal(f"the network runs on {device}, and the int8 kernels are oneDNN's, "
                       "for CPUs", f"{fix}; on CUDA auto takes exact float16 instead")
    if cpu_int8_unit() is None:
        return Refusal("this CPU has no int8 dot-product unit (AVX512-VNNI, AVX-VNNI or "
                       "AMX), which the int8 path is made for", fix)
    problem = _op_problem()
    return None if problem is None else Refusal(problem, f"{fix}, or install torch >= 2.6 "
                                                "built with oneDNN")


def int8_ops(layer: SpikingLayer,
             input_refusal: Refusal | None) -> tuple[nn.Sequential | None, Refusal | None]:
    """`layer.ops` with its +-1 conv or linear made `Int8Conv`/`Int8Linear`, or None and why
    not. `input_refusal`: why the layer's input is not 0/1 spikes, if it is not."""
    if input_refusal is not None:
        return None, input_refusal
    ops = list(layer.ops)
    for i, op in enumerate(ops):
        if isinstance(op, nn.Conv2d | nn.Linear):
            refusal = _weights_refusal(op, layer)
            if refusal is not None:
                return None, refusal
            kernel = Int8Conv(op) if isinstance(op, nn.Conv2d) else Int8Linear(op)
            return nn.Sequential(*ops[:i], kernel, *ops[i + 1:]), None
        if not isinstance(op, SPIKE_PRESERVING):
            return None, Refusal(f"{type(op).__name__} comes before its weights, so they do "
                                 "not see 0/1 spikes", "use --precision auto")
    return None, Refusal("it has no conv or linear", "use --precision auto")


def _weights_refusal(op: nn.Conv2d | nn.Linear, layer: SpikingLayer) -> Refusal | None:
    if op.weight.dtype != torch.float32:
        return Refusal(f"its weights are {op.weight.dtype}, not float32", "convert in float32")
    if is_sign_op(op):
        return None
    if bool(op.weight.detach().abs().eq(1).all()):
        return Refusal("its conv is not a plain one (grouped, padded other than with zeros, "
                       "or with a bias)", "use --precision auto")
    if layer.binary:
        return Refusal("its binary weights are +-alpha, not +-1",
                       "pass --binary-weights sign (alpha folded into the thresholds)")
    return Refusal("its weights are full precision", "use --precision auto or fp32")
