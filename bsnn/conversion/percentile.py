"""Exact percentiles of activations streamed in batches, in bounded memory.

torch.quantile fails above 2^24 elements and needs every value at once. Here each pass over the
images narrows a window around the wanted order statistics with a 4,096-bin histogram per group
(a layer, or one channel), shrunk to the extreme values seen in the chosen bins; once few values
are left in the window (or they are all equal) they are collected and the answer is read off
exactly, with numpy's linear interpolation. Typically 3 passes; the memory is the histogram plus
the collected window, whatever the activation size.
"""

from __future__ import annotations

import math
import numbers

import torch

from bsnn.errors import ConfigError, ConversionError

BINS = 4096
COLLECT_CAP = 1 << 22  # values gathered in the final pass, over all groups
CHUNK = 1 << 20  # elements processed at once (measured: 1 << 22 peaked at 3.7x the tensor)


def check_percentile(q: object) -> float:
    """q as a float, or a ConfigError: a percentile lies in (0, 100] (NaN does not; 0 would put
    every threshold at the minimum activation, 0 after a ReLU)."""
    if isinstance(q, bool) or not isinstance(q, numbers.Real):
        raise ConfigError(f"percentile {q!r} is not a number",
                          "pass a number between 0 (exclusive) and 100, e.g. 99.7")
    if not 0 < q <= 100:
        raise ConfigError(f"percentile {q!r} is outside (0, 100]",
                          "pass a number between 0 (exclusive) and 100, e.g. 99.7")
    return float(q)


class StreamingPercentile:
    """The q-th percentile of each group of a stream of activations.

    Feed every batch of a pass to `update(a)` (a: (N, C, ...) activations), call `end_pass()`,
    and repeat passes over the same data while `done` is False; then read `result`.
    `per_channel` makes each channel a group; otherwise the whole layer is one group.
    """

    def __init__(self, q: float, per_channel: bool = False) -> None:
        if not isinstance(per_channel, bool):
            raise ConfigError(f"per_channel {per_channel!r} is not a bool",
                              "pass True (a group per channel) or False (one per layer)")
        self.q = check_percentile(q)
        self.per_channel = per_channel
        self.sample_shape: tuple[int, ...] | None = None  # one sample's (C, ...), fixed
        self.pass_no = 0
        self.groups = 0
        self.done = False
        self.result: torch.Tensor | None = None
        self._collect = False
        self._bucket: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _view(self, a: torch.Tensor) -> torch.Tensor:
        a = a.detach()
        if self.per_channel:
            return a.reshape(a.shape[0], a.shape[1], -1)
        return a.reshape(a.shape[0], 1, -1)

    def _chunks(self, a: torch.Tensor):  # type: ignore[no-untyped-def]
        """(values float64 flat, group ids flat) in chunks of about CHUNK elements."""
        v = self._view(a)
        per_sample = v.shape[1] * v.shape[2]
        step = max(1, CHUNK // max(per_sample, 1))
        gid = torch.arange(v.shape[1], device=v.device).view(1, -1, 1)
        for i in range(0, v.shape[0], step):
            x = v[i:i + step]
            yield x.reshape(-1).double(), gid.expand_as(x).reshape(-1)

    def _check(self, a: torch.Tensor) -> None:
        """Every batch must hold (N, C, ...) activations of one and the same layer."""
        if a.dim() < 2:
            raise ConfigError(f"activations of shape {tuple(a.shape)} have no channel axis",
                              "pass (N, C, ...) activations: a batch of one layer's outputs")
        if self.sample_shape is None:
            self.sample_shape = tuple(a.shape[1:])
        elif tuple(a.shape[1:]) != self.sample_shape:
            raise ConfigError(f"activations of shape (N, {', '.join(map(str, a.shape[1:]))}) "
                              f"follow (N, {', '.join(map(str, self.sample_shape))})",
                              "feed one layer's activations to one StreamingPercentile")

    def update(self, a: torch.Tensor) -> None:
        """Feed one batch (N, C, ...) of the pass; empty batches add nothing."""
        self._check(a)
        if a.shape[0] == 0:
            return
        if self.pass_no == 0:
            v = self._view(a)
            if self.groups == 0:
                self.groups = v.shape[1]
                g, dev = self.groups, v.device
                self.n = torch.zeros(g, dtype=torch.long, device=dev)
                self.lo = torch.full((g,), math.inf, dtype=torch.float64, device=dev)
                self.hi = torch.full((g,), -math.inf, dtype=torch.float64, device=dev)
            self.n += v.shape[0] * v.shape[2]
            self.lo = torch.minimum(self.lo, v.amin(dim=(0, 2)).double())
            self.hi = torch.maximum(self.hi, v.amax(dim=(0, 2)).double())
            return
        for x, g in self._chunks(a):
            lo, hi = self.lo[g], self.hi[g]
            inside = (x >= lo) & (x < hi)
            if self._collect:
                inside &= ~self._settled[g]
                self._bucket.append((g[inside], x[inside]))
                continue
            xi, gi = x[inside], g[inside]
            b = ((xi - self.lo[gi]) / self._width[gi]).floor_().long().clamp_(0, BINS - 1)
            # settle rounding at the edges against the same float64 edges used to narrow the
            # window, so that membership agrees between passes
            flat = self._edges.view(-1)
            b -= (xi < flat[gi * (BINS + 1) + b]).long()
            b += (xi >= flat[gi * (BINS + 1) + b + 1]).long()
            b = b.clamp_(0, BINS - 1)
            cell = gi * BINS + b
            self.hist += torch.bincount(cell, minlength=self.groups * BINS).view(
                self.groups, BINS)
            self._bin_min.view(-1).scatter_reduce_(0, cell, xi, "amin")
            self._bin_max.view(-1).scatter_reduce_(0, cell, xi, "amax")

    def end_pass(self) -> None:
        """Close a pass over the data; `done` says whether another one is needed."""
        if self.pass_no == 0:
            if self.groups == 0 or int(self.n.min()) == 0:
                raise ConfigError("no activations were seen in this pass",
                                  "update() with at least one non-empty batch before end_pass()")
            if not (bool(self.lo.isfinite().all()) and bool(self.hi.isfinite().all())):
                raise ConversionError("the activations hold NaN or infinite values",
                                      "check the model's weights and the images for NaN or inf")
            pos = self.q / 100 * (self.n - 1).double()
            self.k0 = pos.floor().long()
            self.frac = pos - self.k0.double()
            self.k1 = torch.minimum(self.k0 + 1, self.n - 1)
            self.below = torch.zeros_like(self.n)
            self._settled = torch.zeros_like(self.n, dtype=torch.bool)
            self.max = self.hi.float()
            self.hi = torch.nextafter(self.hi, torch.full_like(self.hi, math.inf))
        elif self._collect:
            self._finish()
            return
        else:
            self._narrow()
        self.pass_no += 1
        self.hist = torch.zeros(self.groups, BINS, dtype=torch.long, device=self.n.device)
        self._bin_min = torch.full(self.hist.shape, math.inf, dtype=torch.float64,
                                   device=self.n.device)
        self._bin_max = torch.full_like(self._bin_min, -math.inf)
        self._width = (self.hi - self.lo) / BINS
        self._edges = self.lo[:, None] + self._width[:, None] * torch.arange(
            BINS + 1, device=self.lo.device)

    def _narrow(self) -> None:
        cum = self.hist.cumsum(1)
        r0 = (self.k0 - self.below).unsqueeze(1)
        r1 = (self.k1 - self.below).unsqueeze(1)
        b0 = torch.searchsorted(cum, r0, right=True).squeeze(1).clamp_(max=BINS - 1)
        b1 = torch.searchsorted(cum, r1, right=True).squeeze(1).clamp_(max=BINS - 1)
        before = torch.where(b0 > 0, cum.gather(1, (b0 - 1).clamp(min=0)[:, None]).squeeze(1), 0)
        # the window shrinks to the smallest and largest value actually seen in its bins, so a
        # block of equal values around the wanted ranks settles in one pass
        new_lo = self._bin_min.gather(1, b0[:, None]).squeeze(1)
        top = self._bin_max.gather(1, b1[:, None]).squeeze(1)
        self._settled = new_lo == top
        self.below += before
        left = cum.gather(1, b1[:, None]).squeeze(1) - before
        self.lo, self.hi = new_lo, torch.nextafter(top, torch.full_like(top, math.inf))
        self._collect = int(left[~self._settled].sum()) <= COLLECT_CAP

    def _finish(self) -> None:
        g = torch.cat([b[0] for b in self._bucket]) if self._bucket else torch.empty(0)
        x = torch.cat([b[1] for b in self._bucket]) if self._bucket else torch.empty(0)
        self._bucket = []
        out = torch.empty(self.groups, dtype=torch.float64, device=self.n.device)
        for grp in range(self.groups):
            vals = x[g == grp].sort().values
            i0 = int(self.k0[grp] - self.below[grp])
            i1 = int(self.k1[grp] - self.below[grp])
            if self._settled[grp]:  # every value in the window is the same
                out[grp] = self.lo[grp]
                continue
            v0, v1 = vals[min(i0, vals.numel() - 1)], vals[min(i1, vals.numel() - 1)]
            out[grp] = v0 + self.frac[grp] * (v1 - v0)
        self.result = out.float()
        self.done = True
