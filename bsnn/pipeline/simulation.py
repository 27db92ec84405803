"""The simulation phase: the evaluation set through the engine, batch by batch, as events.

Under torchrun rank r simulates global batches r, r+N, ... of the one-process order; each round
every rank contributes one row of counters (idle when it has no batch left) and rank 0 adds them
in global batch order, so counters and events equal a one-process run's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import torch
from torch.utils.data import Subset

from bsnn.conversion import Conversion, chain_forward
from bsnn.conversion.synapses import input_fan_out
from bsnn.diagnostics import BINS, SUMS, batch_histogram, batch_sums
from bsnn.distributed import (
    RankFailed,
    World,
    broadcast_thresholds,
    gather_objects,
    gather_rows,
    rounds,
    shard_batches,
)
from bsnn.events import BatchDone
from bsnn.snn.engine import Engine
from bsnn.snn.options import SimOptions


class CancelRequested(Exception):
    """Raised inside a run when its cancel check turns true; the run ends as `cancelled`."""


class RowState(IntEnum):
    """What a rank's row holds in one round."""

    IDLE = 0  # no batch left for this rank
    DONE = 1
    FAILED = 2


@dataclass(frozen=True)
class CounterRow:
    """One batch's counters as one float64 row (exact for these integer counts), so ranks can
    exchange them in one gather: state, images, ANN correct | correct per step | spikes per
    layer and step | synops per layer and step | ANN activation per layer | ANN-vs-SNN running
    sums per layer (bsnn.diagnostics) | their histograms | the input's accumulates."""

    layers: int
    steps: int

    @property
    def sizes(self) -> list[int]:
        n, t = self.layers, self.steps
        return [1, 1, 1, t, n * t, n * t, n, n * len(SUMS), n * BINS * BINS, 1]

    def empty(self, device: torch.device) -> torch.Tensor:
        return torch.zeros(sum(self.sizes), dtype=torch.float64, device=device)

    def split(self, row: torch.Tensor) -> list[torch.Tensor]:
        return list(row.split(self.sizes))


@dataclass
class Totals:
    """Running sums over the batches added so far; each addition becomes a BatchDone."""

    names: list[str]
    steps: int
    correct: torch.Tensor = field(init=False)
    spikes: torch.Tensor = field(init=False)
    synops: torch.Tensor = field(init=False)
    activation: torch.Tensor = field(init=False)
    agreement: torch.Tensor = field(init=False)
    histogram: torch.Tensor = field(init=False)
    input_ops: float = 0.0
    ann_correct: int = 0
    images: int = 0

    def __post_init__(self) -> None:
        n = len(self.names)
        self.correct = torch.zeros(self.steps, dtype=torch.long)
        self.spikes = torch.zeros(n, self.steps, dtype=torch.float64)
        self.synops = torch.zeros_like(self.spikes)
        self.activation = torch.zeros(n, dtype=torch.float64)
        self.agreement = torch.zeros(n, len(SUMS), dtype=torch.float64)
        self.histogram = torch.zeros(n, BINS * BINS, dtype=torch.float64)

    def add(self, parts: list[torch.Tensor]) -> int:
        """Add one row's counters (CounterRow.split); return its images."""
        _, images, ann, correct, spikes, synops, activation, sums, hist, inputs = parts
        n = len(self.names)
        self.correct += correct.long()
        self.spikes += spikes.view(n, self.steps)
        self.synops += synops.view(n, self.steps)
        self.activation += activation
        self.agreement += sums.view(n, -1)
        self.histogram += hist.view(n, -1)
        self.input_ops += float(inputs)
        self.ann_correct += int(ann)
        self.images += int(images)
        return int(images)

    def event(self, batch: int, images_total: int, elapsed_s: float,
              ranks: list[int] | None) -> BatchDone:
        def per_layer(t: torch.Tensor) -> dict[str, Any]:
            return dict(zip(self.names, t.tolist(), strict=True))

        last = self.images == images_total  # the histograms ride on the last event only
        return BatchDone(batch=batch, images=self.images, images_total=images_total,
                         correct_per_step=self.correct.tolist(), ann_correct=self.ann_correct,
                         spikes=per_layer(self.spikes), synops=per_layer(self.synops),
                         ann_activation=per_layer(self.activation), elapsed_s=elapsed_s,
                         ranks=ranks, agreement=per_layer(self.agreement),
                         agreement_histogram=per_layer(self.histogram) if last else None,
                         input_ops=self.input_ops)


def make_simulator(conversion: Conversion, options: SimOptions, backend: str) -> Any:
    """The engine, or bindsnet running the same network (the reference simulator)."""
    if backend == "bindsnet":
        from bsnn.backends.bindsnet import BindsnetBackend

        return BindsnetBackend(conversion.network, options)
    return Engine(conversion.network, options)


@dataclass
class Simulation:
    """Everything the phase needs; `run` returns the simulation's wall time in seconds."""

    conversion: Conversion
    options: SimOptions
    backend: str
    world: World
    device: torch.device
    emit: Callable[[BatchDone], None]
    cancel: Callable[[], bool]  # checked once per round; raises nothing itself
    loader: Callable[[Any], Iterable[tuple[torch.Tensor, torch.Tensor]]]
    batch_size: int
    input_fan_out: torch.Tensor | None = None  # Poisson input: synapses per input pixel
    # hears, before the first batch, each layer's arithmetic (the engine's; None: bindsnet)
    starting: Callable[[list[str] | None], None] = lambda arithmetic: None

    def run(self, eval_set: Any) -> float:
        broadcast_thresholds(self.conversion.network, self.conversion.ann)  # rank 0's network
        simulator = make_simulator(self.conversion, self.options, self.backend)
        self.starting(simulator.arithmetic(self.device) if isinstance(simulator, Engine)
                      else None)
        names = [layer.name for layer in self.conversion.network.spiking]
        layout = CounterRow(len(names), self.options.time)
        totals = Totals(names, self.options.time)
        w, total = self.world, len(eval_set)
        shard = shard_batches(total, self.batch_size, w.rank, w.size)
        mine = Subset(eval_set, [i for _, r in shard for i in r]) if w.distributed else eval_set
        batches = iter(self.loader(mine))
        per_rank = [0] * w.size
        start = time.perf_counter()
        for k in range(rounds(total, self.batch_size, w.size)):
            if not w.distributed and self.cancel():
                raise CancelRequested
            row, error = layout.empty(self.device), None
            if k < len(shard):
                try:
                    row = self._batch(simulator, *next(batches), shard[k][0])
                except Exception as e:
                    if not w.distributed:
                        raise
                    error, row[0] = e, RowState.FAILED
            cancelled = w.distributed and self.cancel()
            rows = gather_rows(torch.cat([row, row.new_tensor([cancelled])])).cpu()
            for r in range(w.size):
                parts = layout.split(rows[r, :-1])
                if parts[0] == RowState.DONE:
                    per_rank[r] += totals.add(parts)
                    self.emit(totals.event(k * w.size + r, total, time.perf_counter() - start,
                                           list(per_rank) if w.distributed else None))
            _raise_rank_failure(rows, error, k, w)
            if rows[:, -1].any():
                raise CancelRequested
        return time.perf_counter() - start

    def _batch(self, simulator: Any, x: torch.Tensor, y: torch.Tensor,
               batch: int) -> torch.Tensor:
        """One batch through the ANN (for its accuracy and activations) and the simulator."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.no_grad():
            out, acts = chain_forward(self.conversion.ann, x, keep=True)
        engine = isinstance(simulator, Engine)  # bindsnet gives no per-neuron counts
        counts = (simulator.run_batch(x, y, batch, keep_totals=True) if engine
                  else simulator.run_batch(x, y, batch))
        head = torch.tensor([RowState.DONE, len(y)], dtype=torch.float64, device=self.device)
        return torch.cat([head, (out.argmax(1) == y).sum(dtype=torch.float64)[None],
                          counts.correct.double(), counts.spikes.flatten(),
                          counts.synops.flatten(),
                          torch.stack([a.sum(dtype=torch.float64) for a in acts]),
                          *self._agreement(acts, counts.totals if engine else None),
                          self._input_ops(x)[None]])

    def _agreement(self, acts: list[torch.Tensor],
                   totals: list[torch.Tensor] | None) -> list[torch.Tensor]:
        """Each layer's ANN-vs-SNN running sums and histogram (zeros without per-neuron counts:
        n = 0 reads as "not measured")."""
        layers = self.conversion.network.spiking
        if totals is None:
            return [torch.zeros(len(layers) * (len(SUMS) + BINS * BINS), dtype=torch.float64,
                                device=self.device)]
        t = self.options.time
        sums = [batch_sums(a, n, layer.lam, t) for a, n, layer in zip(acts, totals, layers,
                                                                          strict=True)]
        hists = [batch_histogram(a, n, layer.lam, t).flatten()
                 for a, n, layer in zip(acts, totals, layers, strict=True)]
        return [torch.cat(sums), torch.cat(hists)]

    def _input_ops(self, x: torch.Tensor) -> torch.Tensor:
        """Poisson input: the expected accumulates its spikes cause in the first layer (each
        pixel fires with probability |x| / scale a step); constant input: none (the first
        layer's current is computed once, as MACs)."""
        if self.options.encoding == "constant":
            return torch.zeros((), dtype=torch.float64, device=self.device)
        if self.input_fan_out is None:
            self.input_fan_out = input_fan_out(self.conversion.network).double()
        rate = (x.abs() / self.conversion.network.input_scale).clamp(max=1).flatten(1).double()
        return (rate @ self.input_fan_out).sum() * self.options.time


def _raise_rank_failure(rows: torch.Tensor, error: Exception | None, k: int, w: World) -> None:
    """Every rank learns of a failure at the same boundary, so none is left waiting: the failed
    rank raises its own error (handled as in one process), the others name it."""
    failed = (rows[:, 0] == RowState.FAILED).nonzero().flatten().tolist()
    if not failed:
        return
    notes = gather_objects(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    r = failed[0]
    raise RankFailed(f"rank {r} of {w.size} failed at batch {k * w.size + r}: {notes[r]}",
                     f"rank {r}'s traceback is in its output (torchrun prints it); the other "
                     "ranks stopped at the same batch boundary")
