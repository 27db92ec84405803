"""`bsnn.simulate` end to end on a binary vgg15ab: the default precision against --precision fp32.

    python benchmarks/bench_int8_e2e.py [--images 64] [--time 32] [--batch-size 32] [--repeat 3]
        [--propagation same-step]

A random-weight binary vgg15ab (width 1, 32x32, 100 classes) converted once with the defaults
(sign mode), then simulated on random images through the API, the way a notebook would: the
default (`auto`: int8 on a CPU with VNNI or AMX) and fp32 in turns, each the whole call (data
loading, engine, summary). Prints the best and median seconds, their ratio, which arithmetic
each layer ran, and whether accuracy per step, firing rates and synaptic operations agree.
The issue's target: int8 at least 3x faster end to end on a CPU with AMX-INT8 or VNNI.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

import bsnn
from bsnn.events import Phase
from bsnn.models import build_model


def cpu() -> str:
    text = Path("/proc/cpuinfo").read_text()
    model = next((x.partition(":")[2].strip() for x in text.splitlines()
                  if x.startswith("model name")), "unknown")
    flags = [f for f in ("avx2", "avx512_vnni", "amx_int8") if f in text.split()]
    return f"{model} ({' '.join(flags) or 'no int8 flags'})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--time", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--propagation", default="delayed", help="delayed (the default) or same-step")
    args = p.parse_args()
    torch.manual_seed(0)
    model = build_model("vgg15ab", 100, (3, 32, 32), binary=True).eval()
    calibration = torch.randn(64, 3, 32, 32)
    snn = bsnn.convert(model, calibration, device="cpu", norm=64)
    images = torch.randn(args.images, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(1)
    said: dict[str, str] = {}
    times: dict[str, list[float]] = {"auto": [], "fp32": []}
    results = {}
    for _ in range(args.repeat):
        for precision in times:
            start = time.perf_counter()
            results[precision] = bsnn.simulate(
                snn, (images, labels), time=args.time, batch_size=args.batch_size,
                precision=precision, propagation=args.propagation,
                on_event=lambda e, k=precision: said.__setitem__(
                    k, e.message) if isinstance(e, Phase) and e.name == "simulate" else None)
            times[precision].append(time.perf_counter() - start)
    auto, fp32 = results["auto"], results["fp32"]
    same = (auto.accuracy_per_step == fp32.accuracy_per_step and
            [(a.firing_rate, a.synops_per_image) for a in auto.layers] ==
            [(b.firing_rate, b.synops_per_image) for b in fp32.layers])
    print(f"CPU: {cpu()}, {torch.get_num_threads()} threads; torch {torch.__version__}")
    print(f"binary vgg15ab width 1, {args.images} images x T={args.time}, batch "
          f"{args.batch_size}, {args.propagation} propagation, {args.repeat} rounds in turns")
    for precision, runs in times.items():
        print(f"{precision}: {', '.join(f'{t:.2f}' for t in runs)} s — {said[precision]}")
    best = min(times["fp32"]) / min(times["auto"])
    median = statistics.median(times["fp32"]) / statistics.median(times["auto"])
    print(f"fp32 time / default time: best {best:.2f}, median {median:.2f} (target >= 3); "
          f"same accuracy per step, rates and synops: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
