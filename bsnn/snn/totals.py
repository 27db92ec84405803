"""Per-neuron spike counts over a batch, for the agreement diagnostic (`keep_totals`).

They cost one pass over each layer's spike map per step; kept in uint8 where the spikes are
int8 already, that pass reads and writes a byte per neuron instead of eight (float32 counts
plus float32 spikes): isolated, the counting costs about 2 % of a binary vgg15ab batch on the
int8 path and 1 % on the float32 path (benchmarks/RESULTS.md, 2026-12-05).
"""

from __future__ import annotations

import torch


class SpikeTotals:
    """Per-neuron spike counts over the batch (`keep_totals`), kept cheaply: a layer whose
    spikes leave as int8 counts them in uint8 (a byte read and a byte written per neuron and
    step, against eight bytes for float32), emptied into float32 before 255 steps accumulate
    (never, up to T = 255); the others add their float32 spikes. Returned as float32."""

    def __init__(self, v: list[torch.Tensor], narrow: list[bool]) -> None:
        self.sums = [None if n else torch.zeros_like(t) for t, n in zip(v, narrow, strict=True)]
        self.bytes = [torch.zeros_like(t, dtype=torch.uint8) if n else None
                      for t, n in zip(v, narrow, strict=True)]
        self.pending = 0

    def counters(self, steps: int) -> list[torch.Tensor]:
        """What each layer adds its next `steps` steps of spikes to."""
        if self.pending + steps > 255:
            self.sums = [self._merged(s, b) for s, b in zip(self.sums, self.bytes, strict=True)]
            for b in self.bytes:
                if b is not None:
                    b.zero_()
            self.pending = 0
        self.pending += steps
        return [b if b is not None else s for s, b in zip(self.sums, self.bytes, strict=True)]

    @staticmethod
    def _merged(s: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor:
        if b is None:
            assert s is not None
            return s
        return b.to(torch.float32, memory_format=torch.contiguous_format) if s is None else s + b

    def result(self) -> list[torch.Tensor]:
        return [self._merged(s, b).contiguous()
                for s, b in zip(self.sums, self.bytes, strict=True)]
