"""`bsnn bench engine`: speed and memory of the engine against the dense floor, bindsnet and
(with the `bench` extra) SpikingJelly."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (engine vs dense floor, bindsnet, SpikingJelly)")
    p.add_argument("what", choices=("engine",))
    p.add_argument("--quick", action="store_true", help="small batch and T, no repeats")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--no-bindsnet", action="store_true", help="skip the bindsnet backend")
    p.add_argument("--spikingjelly", action="store_true",
                   help="also time SpikingJelly's conversion of the same network, in turns with "
                        "the engine (needs the bench extra: pip install -e '.[bench]')")
    p.add_argument("--arch", default="vgg8ab", help="architecture at 32x32 (default vgg8ab; "
                   "the paper's is vgg15ab)")
    p.add_argument("--binary", action="store_true",
                   help="the arch's binary form, converted with --binary-weights sign")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--time", type=int, default=64, help="time steps T (default 64)")
    p.add_argument("--repeat", type=int, default=7, help="rounds timed in turns; the best "
                   "counts (default 7)")
    p.add_argument("--device", choices=("all", "cpu", "cuda"), default="all",
                   help="where to run (default all: the CPU, and CUDA when there is one)")
    p.set_defaults(func=main)


ROWS = [
    ("engine img*steps/s", "engine_img_steps_per_s", ",.0f"),
    ("dense floor img*steps/s", "dense_img_steps_per_s", ",.0f"),
    ("dense floor TF32 img*steps/s", "dense_tf32_img_steps_per_s", ",.0f"),
    ("SpikingJelly img*steps/s", "spikingjelly_img_steps_per_s", ",.0f"),
    ("bindsnet img*steps/s", "bindsnet_img_steps_per_s", ",.0f"),
    ("engine speed / SpikingJelly (target >= 1.5)", "engine_over_spikingjelly_speed", ".2f"),
    ("engine time / dense (target <= 1.1)", "engine_over_dense_time", ".2f"),
    ("engine time / dense TF32", "engine_over_dense_tf32_time", ".2f"),
    ("engine speed / bindsnet", "engine_over_bindsnet_speed", ".1f"),
    ("spike-count mismatch vs bindsnet (target 0)", "spike_count_mismatch", "d"),
    ("engine peak MB", "engine_peak_mb", ".1f"),
    ("ANN peak MB", "ann_peak_mb", ".1f"),
    ("threshold percentile 32x64x112x112 s", "calibration_s", ".2f"),
    ("threshold percentile peak MB (tensor 98 MB)", "calibration_peak_mb", ".1f"),
]


def _devices(choice: str) -> list[Any]:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bsnn bench: --device cuda, but torch sees no CUDA device")
    cuda = [torch.device("cuda")] if torch.cuda.is_available() and choice != "cpu" else []
    return ([torch.device("cpu")] if choice != "cuda" else []) + cuda


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bsnn.bench import bench_engine, bench_threshold_percentile, has_spikingjelly

    if args.spikingjelly and not has_spikingjelly():
        raise SystemExit("bsnn bench: --spikingjelly needs SpikingJelly: "
                         "pip install -e '.[bench]'")
    batch, steps = (8, 16) if args.quick else (args.batch_size, args.time)
    results = []
    for device in _devices(args.device):
        r = bench_engine(device, batch=batch, time_steps=steps, arch=args.arch,
                         with_bindsnet=not args.no_bindsnet,
                         repeat=1 if args.quick else args.repeat,
                         with_spikingjelly=args.spikingjelly, binary=args.binary)
        r.update(bench_threshold_percentile(device=device))
        results.append(r)
    kind = " (binary, +-1)" if args.binary else ""
    table = Table(title=f"engine benchmark: {args.arch}{kind}, batch {batch}, T={steps}")
    table.add_column("figure")
    for r in results:
        table.add_column(r["device"], justify="right")
    for label, key, spec in ROWS:
        if any(r.get(key) is not None for r in results):
            table.add_row(label, *["—" if r.get(key) is None else format(r[key], spec)
                                   for r in results])
    Console().print(table)
    if args.json:
        # the first device's figures at the top level, every device's under "devices"
        args.json.write_text(json.dumps({**results[0], "devices": results}, indent=2))
    return 0
