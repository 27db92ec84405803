"""What `keep_totals` (the agreement diagnostic's per-neuron spike counts) costs a batch.

    python benchmarks/bench_totals.py [--binary] [--precision int8] [--batch 32] [--time 32]

In turns, in one process, on vgg15ab (random weights): a batch without and with
`keep_totals`, and the totals' work alone — `SpikeTotals` with the engine's own shapes, dtypes
and layouts, T steps of adds and the float32 result — and the old scheme's (`totals +=
s.sum(0)` on float32 maps). A whole batch varies more between rounds on a shared machine than
the totals cost, so the isolated work is the figure to read.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bsnn.conversion import convert
from bsnn.models import build_model
from bsnn.snn import engine as E
from bsnn.snn.options import SimOptions


def _setup(binary: bool, precision: str, batch: int, steps: int) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    model = build_model("vgg15ab", 10, (3, 32, 32), binary=binary).eval()
    calib = [torch.randn(batch, 3, 32, 32) for _ in range(2)]
    net = convert(model, lambda: calib, 99.7, binary_weights="sign" if binary else "alpha").network
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
    engine = E.Engine(net, SimOptions(steps, precision=precision))
    plan = engine._plan(x.device)
    int8 = any(p.arithmetic == "int8-exact" for p in plan.paths)
    chunk = E.choose_chunk(net, batch, steps, x.device, int8=int8)
    v = [E._maps((batch,), layer.shape, x.dtype, x.device, cl).zero_()
         for layer, cl in zip(net.spiking, plan.channels_last, strict=True)]
    spikes = [(torch.rand(t.shape) < 0.2).to(d or x.dtype).contiguous(
        memory_format=torch.channels_last if cl else torch.contiguous_format)
        for t, d, cl in zip(v, plan.spike_dtype, plan.channels_last, strict=True)]
    floats = [(torch.rand(1, *t.shape) < 0.2).float() for t in v]

    def totals_alone() -> object:
        totals = E.SpikeTotals(v, [d is not None and chunk <= 255 for d in plan.spike_dtype])
        for t0 in range(0, steps, chunk):
            k = min(chunk, steps - t0)
            counters = totals.counters(k)
            for _ in range(k):
                for c, s in zip(counters, spikes, strict=True):
                    c.add_(s.view(torch.uint8) if c.dtype == torch.uint8 else s)
        return totals.result()

    def old_alone() -> object:
        totals = [torch.zeros_like(t) for t in v]
        for _ in range(steps):
            for t, s in zip(totals, floats, strict=True):
                t += s.sum(0)
        return totals

    return {"batch": lambda: engine.run_batch(x, y),
            "batch + totals": lambda: engine.run_batch(x, y, keep_totals=True),
            "totals alone": totals_alone, "old totals alone": old_alone}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--binary", action="store_true", help="binary vgg15ab, sign mode")
    p.add_argument("--precision", default="auto")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--time", type=int, default=32)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    contenders = _setup(args.binary, args.precision, args.batch, args.time)
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.repeat):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    best, median = min(times["batch"]), statistics.median(times["batch"])
    for name, ts in times.items():
        share = "" if name == "batch" else (
            f"  ({100 * min(ts) / best:.1f} % / {100 * statistics.median(ts) / median:.1f} %"
            " of a batch, best / median)")
        print(f"{name:17s} best {min(ts):.4f} s, median {statistics.median(ts):.4f} s{share}")


if __name__ == "__main__":
    main()
