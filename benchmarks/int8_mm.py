"""The int8 candidate for CUDA (issue 25), timed against the exact float16 path layer by layer.

    python benchmarks/gpu_check.py int8 --device cuda --out OUTDIR [--quick]

A +-1 conv on 0/1 spikes as int8 im2col and `torch._int_mm` (int8 x int8 -> int32, tensor
cores on CUDA), its int32 sums read as float32. For every +-1 conv of a binary vgg15ab (sign
mode), fed random spikes of density 0.1, this times the candidate, bsnn's exact float16 path
(`ExactHalf`) and the float32 conv in turns, and checks that the candidate and float16 give the
float32 conv's sums bit for bit. The engine's `auto` keeps float16 on CUDA until these figures
say int8 is faster there; on a CPU the same code runs (slowly), so tests keep it honest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bsnn.conversion import convert
from bsnn.models import build_model
from bsnn.snn.exact import ExactHalf, is_sign_op

DENSITY = 0.1


class IntMMConv(nn.Module):
    """A +-1 conv as im2col of int8 spikes and `torch._int_mm` with int8 weights."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        w = conv.weight.detach()
        self.kernel = tuple(w.shape[2:])
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        k = w[0].numel()
        self.k_padded = -(-k // 8) * 8  # _int_mm on CUDA takes K and N in multiples of 8
        flat = w.permute(0, 2, 3, 1).flatten(1).to(torch.int8)  # (N, kh * kw * C), C fastest
        self.weight = F.pad(flat, (0, self.k_padded - k)).t().contiguous()  # (K, N)

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        n, _, h, w = spikes.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        x = F.pad(spikes.to(torch.int8).permute(0, 2, 3, 1), (0, 0, pw, pw, ph, ph))
        taps = [x[:, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw]
                for i in range(kh) for j in range(kw)]
        cols = torch.stack(taps, dim=3).flatten(0, 2).flatten(1)
        cols = F.pad(cols, (0, self.k_padded - cols.shape[1]))
        out = torch._int_mm(cols, self.weight).float()
        return out.view(n, oh, ow, -1).permute(0, 3, 1, 2)


def _sign_convs(width: float) -> list[tuple[str, nn.Conv2d, tuple[int, ...]]]:
    """Each +-1 conv of a binary vgg15ab converted in sign mode, with its input's shape."""
    torch.manual_seed(0)
    model = build_model("vgg15ab", 100, (3, 32, 32), binary=True, width=width).eval()
    calib = [torch.randn(8, 3, 32, 32)]
    net = convert(model, lambda: calib, 99.7).network
    convs = []
    shape: tuple[int, ...] = net.input_shape
    for layer in net.layers:
        op = next((m for m in layer.ops if isinstance(m, nn.Conv2d)), None)
        if op is not None and is_sign_op(op):
            convs.append((layer.name, op, shape))
        shape = layer.shape
    return convs


def _best_ms(fn: Callable[[], torch.Tensor], device: torch.device, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def int8_layers(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    """Per +-1 conv: ms of the float32 conv, exact float16 and int8 `_int_mm` (best of the
    rounds, the three in turns), and whether float16 and int8 equal float32 bit for bit."""
    batch, width, rounds = (4, 0.125, 2) if quick else (256, 1.0, 5)
    rows = []
    for name, conv, shape in _sign_convs(width):
        conv = conv.to(device)
        x = (torch.rand(batch, *shape, device=device) < DENSITY).float()
        contenders = {"fp32": conv, "fp16": ExactHalf(conv), "int8": IntMMConv(conv).to(device)}
        with torch.no_grad():
            ref = conv(x)
            equal = {k: bool(torch.equal(f(x), ref)) for k, f in contenders.items() if k != "fp32"}
            ms: dict[str, float] = {k: float("inf") for k in contenders}
            for _ in range(rounds):
                for k, f in contenders.items():
                    ms[k] = min(ms[k], _best_ms(lambda f=f, x=x: f(x), device, 1))
        rows.append({"layer": name, "input": list(shape), "batch": batch,
                     "fp32_ms": ms["fp32"], "fp16_ms": ms["fp16"], "int8_ms": ms["int8"],
                     "fp16_exact": equal["fp16"], "int8_exact": equal["int8"]})
        print(f"{name} {shape}: fp32 {ms['fp32']:.2f} ms, fp16 {ms['fp16']:.2f}, "
              f"int8 {ms['int8']:.2f}; exact {equal}", flush=True)
    return rows


def int8_table(rows: list[dict[str, Any]]) -> list[str]:
    """results.md's section: per layer, and the totals with int8's speed over float16's."""
    lines = ["| layer | input | batch | fp32 ms | fp16 ms | int8 ms | fp16 exact | int8 exact |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['layer']} | {'x'.join(map(str, r['input']))} | {r['batch']} | "
                     f"{r['fp32_ms']:.2f} | {r['fp16_ms']:.2f} | {r['int8_ms']:.2f} | "
                     f"{r['fp16_exact']} | {r['int8_exact']} |")
    if rows:
        total = {k: sum(r[f"{k}_ms"] for r in rows) for k in ("fp32", "fp16", "int8")}
        lines.append(f"| all | | | {total['fp32']:.2f} | {total['fp16']:.2f} | "
                     f"{total['int8']:.2f} | | |")
        lines += ["", f"int8 speed / float16 speed: {total['fp16'] / total['int8']:.2f} "
                  "(above 1: int8 is faster, and `auto` on CUDA could take it)"]
    return lines
