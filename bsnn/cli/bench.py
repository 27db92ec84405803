"""`bsnn bench engine`: speed and memory of the engine against bindsnet and the dense floor."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks (engine vs bindsnet vs dense floor)")
    p.add_argument("what", choices=("engine",))
    p.add_argument("--quick", action="store_true", help="small batch and T, no repeats")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--no-bindsnet", action="store_true", help="skip the bindsnet backend")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--time", type=int, default=64, help="time steps T (default 64)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from rich.table import Table

    from bsnn.bench import bench_engine, bench_threshold_percentile

    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                       else [])
    batch, steps = (8, 16) if args.quick else (args.batch_size, args.time)
    results = []
    for device in devices:
        r = bench_engine(device, batch=batch, time_steps=steps,
                         with_bindsnet=not args.no_bindsnet, repeat=1 if args.quick else 7)
        r.update(bench_threshold_percentile(device=device))
        results.append(r)
    table = Table(title=f"engine benchmark: vgg8ab, batch {batch}, T={steps}")
    table.add_column("figure")
    for r in results:
        table.add_column(r["device"], justify="right")
    rows = [
        ("engine img*steps/s", "engine_img_steps_per_s", ",.0f"),
        ("bindsnet img*steps/s", "bindsnet_img_steps_per_s", ",.0f"),
        ("dense floor img*steps/s", "dense_img_steps_per_s", ",.0f"),
        ("engine speed / bindsnet (target >= 5)", "engine_over_bindsnet_speed", ".1f"),
        ("engine time / dense (target <= 1.1)", "engine_over_dense_time", ".2f"),
        ("spike-count mismatch (target 0)", "spike_count_mismatch", "d"),
        ("engine peak MB", "engine_peak_mb", ".1f"),
        ("ANN peak MB", "ann_peak_mb", ".1f"),
        ("threshold percentile 32x64x112x112 s", "calibration_s", ".2f"),
        ("threshold percentile peak MB (tensor 98 MB)", "calibration_peak_mb", ".1f"),
    ]
    for label, key, spec in rows:
        table.add_row(label, *["—" if r.get(key) is None else format(r[key], spec)
                               for r in results])
    Console().print(table)
    if args.json:
        # the CPU figures at the top level, every device's under "devices"
        args.json.write_text(json.dumps({**results[0], "devices": results}, indent=2))
    return 0
