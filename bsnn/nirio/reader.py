"""The chain's nodes, in order, read back into spiking layers (for `from_nir`)."""

from __future__ import annotations

import math
import os
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn

from bsnn.errors import CheckpointError
from bsnn.nirio.common import WEIGHTED, pair
from bsnn.snn.network import SpikingLayer


def bad(path: str | os.PathLike[str], problem: str) -> CheckpointError:
    """The error for a file bsnn does not read: its problem, and what bsnn reads."""
    return CheckpointError(f"{path} is not a bsnn-shaped NIR network: {problem}",
                           "bsnn reads one chain Input -> (Conv2d | Affine | Linear | SumPool2d "
                           "| AvgPool2d | Flatten)+ -> IF [-> Scale] -> ... -> Output, as "
                           "`bsnn export --nir` writes (docs/nir.md)")


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A layer's per-neuron parameter as bsnn keeps it: one value, one per channel, or all."""
    flat = t.reshape(-1)
    if bool((flat == flat[0]).all()):
        return flat[0].clone()
    if t.dim() == 3:
        per_channel = t[:, :1, :1]
        if bool((t == per_channel).all()):
            return per_channel.clone()
    return t.clone()


def _tensor(a: Any) -> torch.Tensor:
    """A NIR array as bsnn's float32 (what bsnn writes: read back exactly)."""
    return torch.from_numpy(np.array(a, dtype=np.float32))


def _kind(ops: list[nn.Module]) -> str:
    weighted = [op for op in ops if isinstance(op, WEIGHTED)]
    return "pool" if not weighted else "conv" if isinstance(weighted[0], nn.Conv2d) else "linear"


class Reader:
    """Turns the chain's nodes, in order, into spiking layers. `scale`: how many times bsnn's
    current the file's is (sum pools bsnn wrote, their 1/k^2 folded into the neurons)."""

    def __init__(self, nir: ModuleType, info: dict[str, Any],
                 path: str | os.PathLike[str]) -> None:
        self.nir, self.info, self.path = nir, info, path
        self.described: list[dict[str, Any]] = info.get("layers", [])
        self.layers: list[SpikingLayer] = []
        self.input_shape: tuple[int, int, int] = (0, 0, 0)
        self.shape: tuple[int, ...] = ()
        self.spiked = False  # the last node was IF neurons (a Scale may follow)
        self._start_layer()

    def _start_layer(self) -> None:
        self.ops: list[nn.Module] = []
        self.bias: torch.Tensor | None = None  # in the file's units, at the last weighted op
        self.bias_gain = 1  # sum-pool windows after that op: each adds its window's biases
        self.scale = 1

    def node(self, name: str, node: Any) -> None:
        nir = self.nir
        if isinstance(node, nir.Input):
            self.shape = tuple(int(d) for d in node.input_type["input"])
            if len(self.shape) != 3:
                raise bad(self.path, f"its input has shape {self.shape}, not (C, H, W)")
            self.input_shape = self.shape  # type: ignore[assignment]
        elif isinstance(node, nir.IF):
            self._neurons(name, node)
        elif isinstance(node, nir.Scale):
            self._amplitude(name, node)
        else:
            op = self._op(name, node)
            try:
                with torch.no_grad():
                    self.shape = tuple(op(torch.zeros(1, *self.shape)).shape[1:])
            except RuntimeError as err:
                raise bad(self.path, f"node {name} does not take its input of shape "
                           f"{self.shape} ({err})") from None
            self.ops.append(op)
            self.spiked = False

    def _op(self, name: str, node: Any) -> nn.Module:
        """The torch op of a linear node; its bias is kept to add after the layer's ops."""
        nir = self.nir
        if isinstance(node, nir.Conv2d | nir.Affine | nir.Linear):
            return self._weighted(name, node)
        if isinstance(node, nir.SumPool2d | nir.AvgPool2d):
            k, s, p = (pair(getattr(node, a)) for a in ("kernel_size", "stride", "padding"))
            if isinstance(node, nir.AvgPool2d):
                return nn.AvgPool2d(k, s, p)
            if self.bias is not None:
                self.bias_gain *= k[0] * k[1]
            if self.info.get("pooling") != "sum":  # a sum pool of another tool: a sum
                return nn.AvgPool2d(k, s, p, divisor_override=1)
            divisor = self.info.get("divisors", {}).get(name)
            self.scale *= int(divisor or k[0] * k[1])
            return nn.AvgPool2d(k, s, p, divisor_override=divisor)
        if isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            return nn.Flatten(start + 1, end + 1 if end >= 0 else end)
        raise bad(self.path, f"node {name} is a {type(node).__name__}; bsnn simulates IF "
                   "neurons fed by conv, affine, linear, pooling and flatten nodes")

    def _weighted(self, name: str, node: Any) -> nn.Module:
        if self.bias is not None:
            raise bad(self.path, f"node {name} follows a biased conv / affine in the same "
                       "layer (no IF between); bsnn adds a layer's bias after all its ops")
        w = _tensor(node.weight)
        if isinstance(node, self.nir.Conv2d):
            padding = node.padding if isinstance(node.padding, str) else pair(node.padding)
            groups = int(node.groups)
            op: nn.Module = nn.Conv2d(w.shape[1] * groups, w.shape[0], tuple(w.shape[2:]),
                                      pair(node.stride), padding, pair(node.dilation),
                                      groups, bias=False, dtype=w.dtype)
        else:
            op = nn.Linear(w.shape[1], w.shape[0], bias=False, dtype=w.dtype)
        op.weight = nn.Parameter(w, requires_grad=False)
        bias = getattr(node, "bias", None)
        if bias is not None and bool(np.any(np.asarray(bias) != 0)):
            self.bias, self.bias_gain = _tensor(bias), 1
        return op

    def _layer(self, name: str, threshold: torch.Tensor | None) -> SpikingLayer:
        """The layer the ops read so far make, ending here (IF neurons, or the output)."""
        if not self.ops:
            raise bad(self.path, f"node {name} follows IF neurons or the input directly; "
                       "bsnn's layers have a conv, affine or pooling before their neurons")
        index = len(self.layers)
        if self.described and len(self.described) <= index:
            raise bad(self.path, "its bsnn metadata describes fewer layers than it has")
        d = self.described[index] if self.described else {}
        bias = None
        if self.bias is not None:
            bias = self.bias * self.bias_gain / self.scale if self.scale != 1 or \
                self.bias_gain != 1 else self.bias
            bias = bias.view(-1, 1, 1) if len(self.shape) == 3 else bias
        lam = d.get("lam")
        dtype = threshold.dtype if threshold is not None else torch.float32
        return SpikingLayer(
            name=d.get("name", name), kind=_kind(self.ops), ops=nn.Sequential(*self.ops),
            bias=bias, threshold=threshold, shape=self.shape, binary=bool(d.get("binary")),
            lam=None if lam is None else torch.tensor(lam, dtype=dtype),
            sources=list(d.get("sources", [])),
            delay=sum(isinstance(op, (*WEIGHTED, nn.AvgPool2d)) for op in self.ops))

    def _neurons(self, name: str, node: Any) -> None:
        where = f"node {name} (IF)"
        if bool(np.any(np.asarray(node.r) != 1)):
            raise bad(self.path, f"{where} has r != 1; bsnn's neurons add their input as it is")
        reset = getattr(node, "v_reset", None)
        if reset is not None and bool(np.any(np.asarray(reset) != 0)):
            raise bad(self.path, f"{where} resets to v_reset != 0; bsnn resets by subtraction")
        v_th = _tensor(node.v_threshold)
        if v_th.numel() != math.prod(self.shape):
            raise bad(self.path, f"{where} has {v_th.numel()} thresholds for "
                       f"{math.prod(self.shape)} neurons")
        v_th = v_th.reshape(self.shape) / self.scale if self.scale != 1 else \
            v_th.reshape(self.shape)
        if not bool((v_th > 0).all()):
            raise bad(self.path, f"{where} has thresholds <= 0")
        layer = self._layer(name, _compact(v_th))
        initial = self.info.get("initial_potential", {}).get(name)
        if initial is not None:
            v = _tensor(initial).reshape(self.shape)
            layer.v_init = _compact(v / self.scale if self.scale != 1 else v)
        self.layers.append(layer)
        self._start_layer()
        self.spiked = True

    def _amplitude(self, name: str, node: Any) -> None:
        """A Scale right after IF neurons: their spikes' amplitude (channel thresholds)."""
        if not self.spiked:
            raise bad(self.path, f"node {name} (Scale) does not follow IF neurons; bsnn reads "
                       "a Scale only as the amplitude of a layer's spikes")
        layer = self.layers[-1]
        amp = _tensor(node.scale)
        if amp.numel() != layer.neurons:
            raise bad(self.path, f"node {name} (Scale) has {amp.numel()} values for "
                       f"{layer.neurons} neurons")
        layer.spike_amplitude = _compact(amp.reshape(layer.shape))
        self.spiked = False

    def finish(self) -> list[SpikingLayer]:
        """The layers, the output's last: its ops are those after the last IF neurons."""
        if not self.layers:
            raise bad(self.path, "it has no IF neurons")
        self.layers.append(self._layer("output", None))
        if self.described and len(self.described) != len(self.layers):
            raise bad(self.path, f"its bsnn metadata describes {len(self.described)} layers, "
                       f"the graph has {len(self.layers)}")
        return self.layers
