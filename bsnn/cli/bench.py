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
    p.add_argument("--json", action="store_true",
                   help="print the figures as JSON instead of the table, for scripts")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="also write the figures as JSON to FILE")
    p.add_argument("--no-bindsnet", action="store_true", help="skip the bindsnet backend")
    p.add_argument("--spikingjelly", action="store_true",
                   help="also time SpikingJelly's conversion of the same network, in turns with "
                        "the engine (needs the bench extra: pip install -e '.[bench]')")
    p.add_argument("--arch", default="vgg8ab", help="architecture at 32x32 (default vgg8ab; "
                   "the paper's is vgg15ab)")
    p.add_argument("--binary", action="store_true",
                   help="the arch's binary form, converted with --binary-weights sign")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--time", type=int, default=None,
                   help="time steps T (default 64; 32 with --suite)")
    p.add_argument("--repeat", type=int, default=7, help="rounds timed in turns; the best "
                   "counts (default 7)")
    p.add_argument("--device", type=_device, default="all",
                   help="auto, cpu, cuda or cuda:N as the other commands take it, or all: the "
                        "CPU, and CUDA when there is one (default: all)")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier of the arch "
                   "(default 1)")
    p.add_argument("--precisions", type=_precisions, default=(), metavar="P,P",
                   help="also time the engine at each of these --precision values (e.g. "
                        "fp32,int8) and check that their counts are the same")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads for torch (default: torch's, one per core)")
    p.add_argument("--suite", action="store_true",
                   help="the precision suite: binary and full-precision vgg15ab at batch 16 "
                        "and 32, T=32: dense floor, engine fp32 and int8, SpikingJelly when "
                        "installed; --width, --repeat, --time and --out apply")
    p.set_defaults(func=main)


def _precisions(text: str) -> tuple[str, ...]:
    from bsnn.snn.options import PRECISIONS

    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = [p for p in chosen if p not in PRECISIONS]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"{text!r}: use precisions from {', '.join(PRECISIONS)}")
    return chosen


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
    *[row for p in ("fp32", "int8", "fp16", "tf32", "auto") for row in (
        (f"engine {p} img*steps/s", f"engine_{p}_img_steps_per_s", ",.0f"),
        (f"engine {p} time / dense", f"engine_{p}_over_dense_time", ".2f"),
        (f"engine {p} speed / SpikingJelly", f"engine_{p}_over_spikingjelly_speed", ".2f"),
        (f"engine {p} peak MB", f"engine_{p}_peak_mb", ".1f"))],
    ("int8 speed / fp32", "int8_over_fp32_speed", ".2f"),
    ("counts identical across precisions", "counts_identical", ""),
    ("int8 weights MB (packed once per network)", "int8_weights_mb", ".1f"),
    ("ANN peak MB", "ann_peak_mb", ".1f"),
    ("threshold percentile 32x64x112x112 s", "calibration_s", ".2f"),
    ("threshold percentile peak MB (tensor 98 MB)", "calibration_peak_mb", ".1f"),
]


def _device(text: str) -> str:
    """--device's value: the other commands' (auto, cpu, cuda, cuda:N) or all."""
    from bsnn.checks import device
    from bsnn.errors import ConfigError
    from bsnn.options import OPTION

    if text != "all":
        try:
            device(OPTION["device"], text, {})
        except ConfigError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not all, auto, cpu, cuda or cuda:N") from None
    return text


def _devices(choice: str) -> list[Any]:
    """The devices to benchmark: the CPU and CUDA when there is one (all), or the one named,
    checked as the other commands check it (no CUDA: a DeviceError)."""
    import torch

    from bsnn.devices import resolve_device

    if choice != "all":
        return [resolve_device(choice)]
    return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bsnn.bench import bench_engine, bench_threshold_percentile, has_spikingjelly
    from bsnn.errors import ConfigError

    if args.spikingjelly and not has_spikingjelly():
        raise ConfigError("--spikingjelly needs SpikingJelly, which is not installed",
                          "pip install -e '.[bench]', or drop --spikingjelly")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    if args.suite:
        from bsnn.cli.bench_suite import run_suite

        return run_suite(args, _devices(args.device))
    batch, steps = (8, 16) if args.quick else (args.batch_size, args.time or 64)
    results = []
    for device in _devices(args.device):
        r = bench_engine(device, batch=batch, time_steps=steps, arch=args.arch,
                         with_bindsnet=not args.no_bindsnet,
                         repeat=1 if args.quick else args.repeat,
                         with_spikingjelly=args.spikingjelly, binary=args.binary,
                         width=args.width, precisions=args.precisions)
        r.update(bench_threshold_percentile(device=device))
        results.append(r)
    # the first device's figures at the top level, every device's under "devices"
    figures = json.dumps({**results[0], "devices": results}, indent=2)
    if args.out is not None:
        args.out.write_text(figures + "\n")
    if args.json:  # stdout holds the JSON alone, as `bsnn runs --json` and `bsnn info --json`
        print(figures)
        return 0
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
    return 0
