"""Which arithmetic computes each layer's current (`SimOptions.precision`), and the flags.

Every path gives float32's currents: full-precision layers run in IEEE float32 (TF32 only when
`tf32` asks for it, on CUDA), and a layer of +-1 weights fed 0/1 spikes may sum its integers
in float16 (`ExactHalf`, split so no partial sum exceeds 2048) or in int8 with int32 sums
(`bsnn.snn.int8`, oneDNN, CPU), both bit for bit equal to float32. `auto` takes int8 on a CPU
with int8 dot-product units, float16 on CUDA, float32 elsewhere; see `plan_currents`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from bsnn.errors import ConfigError
from bsnn.snn.exact import HalfCurrent, half_exact_ops
from bsnn.snn.int8 import Int8Current, Refusal, int8_ops, int8_unavailable
from bsnn.snn.network import SpikingNetwork

ARITHMETIC = ("fp32", "tf32", "fp16-exact", "int8-exact")  # what `Engine.arithmetic` reports


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
class LayerPath:
    """How one layer's current is computed: the function and its arithmetic (ARITHMETIC)."""

    current: Callable[[torch.Tensor], torch.Tensor]
    arithmetic: str


def _input_refusal(net: SpikingNetwork, i: int) -> Refusal | None:
    """Why layer i's input is not 0/1 spikes (None: it is)."""
    if i == 0:
        return Refusal("its input is the analog image, not 0/1 spikes",
                       "nothing to do: the first layer stays float32 under auto")
    if net.layers[i - 1].spike_amplitude is not None:
        return Refusal(f"the spikes of {net.layers[i - 1].name} carry per-channel amplitudes "
                       "(--threshold-granularity channel)",
                       "use --threshold-granularity layer, or --precision auto")
    return None


def plan_currents(net: SpikingNetwork, precision: str,
                  device: torch.device) -> list[LayerPath]:
    """Each layer's current function and arithmetic, in `net.layers` order.

    `auto`: on a CPU with int8 dot-product units (and oneDNN's int8 ops in this torch) every
    layer that qualifies (+-1 weights, fed 0/1 spikes) takes int8; on CUDA they take float16;
    everything else, and every layer on a CPU without such units, float32 (float16 convs are
    many times slower on CPUs: 24x measured on AVX2). `fp16`: float16 where exact, on any
    device. `int8`: int8 where it qualifies, full-precision layers (the first and the last)
    float32; refused (ConfigError naming the layer, why and what to do) where no layer
    qualifies, where a binary spiking layer does not, or where this machine cannot
    (not a CPU, no int8 units, no op). `fp32` and `tf32`: no exact paths but auto's float16
    on CUDA for `tf32`, and TF32 on the others there.
    """
    cuda = device.type == "cuda"
    want_int8 = precision == "int8" or (precision == "auto" and not cuda)
    machine = int8_unavailable(device) if want_int8 else None
    if precision == "int8" and machine is not None:
        raise ConfigError(f"precision int8 cannot run here: {machine.reason}", machine.fix)
    half = precision == "fp16" or (precision in ("auto", "tf32") and cuda)
    plain = "tf32" if precision == "tf32" and cuda else "fp32"
    paths: list[LayerPath] = []
    refusals: list[Refusal | None] = []
    for i, layer in enumerate(net.layers):
        source = _input_refusal(net, i)
        path, refusal = LayerPath(layer.current, plain), None
        if want_int8 and machine is None:
            ops, refusal = int8_ops(layer, source)
            if ops is not None:
                path = LayerPath(Int8Current(ops, layer.bias), "int8-exact")
        ops = half_exact_ops(layer, source is None) if half else None
        if ops is not None and path.arithmetic == plain:
            path = LayerPath(HalfCurrent(ops, layer.bias), "fp16-exact")
        paths.append(path)
        refusals.append(refusal)
    if precision == "int8":
        _check_int8(net, paths, refusals)
    return paths


def _check_int8(net: SpikingNetwork, paths: list[LayerPath],
                refusals: list[Refusal | None]) -> None:
    """An explicit `int8` must serve every binary spiking layer, and at least one layer."""
    int8 = [p.arithmetic == "int8-exact" for p in paths]
    for layer, took, refusal in zip(net.layers, int8, refusals, strict=True):
        if layer.binary and not layer.is_output and not took and refusal is not None:
            raise ConfigError(f"precision int8: binary layer {layer.name} cannot take int8: "
                              f"{refusal.reason}", refusal.fix)
    if not any(int8):
        why = "; ".join(f"{layer.name}: {r.reason}" for layer, r in
                        zip(net.layers, refusals, strict=True) if r is not None)
        raise ConfigError(f"precision int8: no layer of this network can take int8 ({why})",
                          "int8 serves the +-1 layers of a binary model converted with "
                          "--binary-weights sign; use --precision auto or fp32 for this one")


def layer_currents(net: SpikingNetwork, precision: str,
                   device: torch.device) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """Each layer's current function (`plan_currents` without the arithmetic)."""
    return [path.current for path in plan_currents(net, precision, device)]
