"""`bsnn bench engine --suite`: the precision suite's table (bsnn.bench.bench_suite).

One column per network and batch: the dense floor, the engine's float32 and int8 paths and
SpikingJelly in img*steps/s, the ratios the goals are stated in, whether the float32 and int8
counts are the same, and peak memory against the ANN's.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

GOALS = ("goals: binary int8 >= 4x the dense floor's speed (moonshot 6x) and >= 3x "
         "SpikingJelly's; full-precision fp32 time <= 1.05x the floor's; peak <= 2x the ANN's")


def _cell(row: dict[str, Any], key: str, spec: str, invert: bool = False) -> str:
    value = row.get(key)
    if value is None:
        return "—"
    return format(1 / value if invert else value, spec)


def _peaks(row: dict[str, Any]) -> str:
    ann = row["ann_peak_mb"]
    parts = [f"{ann:.1f}"] + [f"{row[k]:.1f} ({row[k] / ann:.2f}x)" for k in
                              ("engine_fp32_peak_mb", "engine_int8_peak_mb") if k in row]
    return " / ".join(parts)


FIGURES: list[tuple[str, Any]] = [
    ("dense floor img*steps/s", lambda r: _cell(r, "dense_img_steps_per_s", ",.0f")),
    ("engine fp32 img*steps/s", lambda r: _cell(r, "engine_fp32_img_steps_per_s", ",.0f")),
    ("engine int8 img*steps/s", lambda r: _cell(r, "engine_int8_img_steps_per_s", ",.0f")),
    ("SpikingJelly img*steps/s", lambda r: _cell(r, "spikingjelly_img_steps_per_s", ",.0f")),
    ("int8 speed / dense (>= 4, 6)", lambda r: _cell(r, "engine_int8_over_dense_time", ".2f",
                                                      True)),
    ("int8 speed / SpikingJelly (>= 3)",
     lambda r: _cell(r, "engine_int8_over_spikingjelly_speed", ".2f")),
    ("fp32 time / dense (<= 1.05)", lambda r: _cell(r, "engine_fp32_over_dense_time", ".2f")),
    ("fp32 speed / SpikingJelly",
     lambda r: _cell(r, "engine_fp32_over_spikingjelly_speed", ".2f")),
    ("int8 speed / fp32", lambda r: _cell(r, "int8_over_fp32_speed", ".2f")),
    ("counts fp32 = int8", lambda r: {None: "—", True: "yes", False: "NO"}[
        r.get("counts_identical") if "engine_int8_peak_mb" in r else None]),
    ("peak MB ANN / fp32 / int8 (<= 2x)", _peaks),
    ("int8 weights MB, packed once", lambda r: _cell(r, "int8_weights_mb", ".1f")),
]


def run_suite(args: argparse.Namespace, devices: list[Any]) -> int:
    """Run the suite on each device; print the table (or the JSON with --json)."""
    from rich.console import Console
    from rich.table import Table

    from bsnn.bench import bench_suite, has_spikingjelly, machine

    quick = args.quick
    figures: dict[str, Any] = {"machine": machine(), "devices": {}}
    for device in devices:
        figures["devices"][str(device)] = bench_suite(
            device, repeat=1 if quick else args.repeat, time_steps=4 if quick else args.time or 32,
            batches=(2,) if quick else (16, 32), width=0.125 if quick else args.width,
            with_spikingjelly=has_spikingjelly())
    text = json.dumps(figures, indent=2)
    if args.out is not None:
        args.out.write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    m = figures["machine"]
    for device, rows in figures["devices"].items():
        first = rows[0]
        table = Table(title=f"vgg15ab x{first['width']:g}, T={first['time_steps']}, {device}: "
                            f"{m['cpu']}, int8 unit {m['int8_unit'] or 'none'}, torch "
                            f"{m['torch']}, {m['threads']} threads; best of turns",
                      caption=GOALS)
        table.add_column("figure")
        for row in rows:
            kind = "binary" if row["binary"] else "full precision"
            table.add_column(f"{kind}, batch {row['batch']}", justify="right")
        for name, fn in FIGURES:
            table.add_row(name, *[fn(row) for row in rows])
        Console().print(table)
    return 0
