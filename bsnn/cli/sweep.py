"""`bsnn sweep`: a grid of runs (models x percentiles x switches) and their comparison table."""

from __future__ import annotations

import argparse
from dataclasses import replace

from bsnn.config import RunConfig
from bsnn.options import add_arguments
from bsnn.sweep import PRESETS, parse_variant


def register(sub: argparse._SubParsersAction) -> None:
    presets = "; ".join(f"{k}" + (f" ({v})" if v else "") for k, v in PRESETS.items())
    p = sub.add_parser(
        "sweep", help="run a grid of conversions and write a comparison table",
        description="Every model x percentile x variant is one ordinary run in --job-dir; the "
        "table (accuracy at T = 4 ... 128, first T within 1 point of the ANN, firing rate, "
        "synaptic operations per image) goes to <job-dir>/sweep-*.csv, .md and .png.")
    add_arguments(p, many=True)
    p.add_argument("--variant", nargs="+", default=["paper"], metavar="VARIANT",
                   help=f"presets: {presets}; or NAME:key=value,key=value")
    p.set_defaults(func=main)


SHORT = {"percentile": "p", "variant": "variant", "ann_acc": "ANN", "final_acc": "final",
         "first_step_within_1pt": "T1pt", "firing_rate": "rate", "synops_per_image": "synops"}


def _short(key: str, value: object) -> str:
    if key == "model":
        return str(value).removeprefix("bundled:").rsplit("/", 1)[-1].removesuffix(".pt")
    if key.startswith("acc") or key in ("ann_acc", "final_acc"):
        return f"{float(value):.1f}"  # type: ignore[arg-type]
    if key == "firing_rate":
        return f"{float(value):.3f}"  # type: ignore[arg-type]
    if key == "synops_per_image":
        return f"{float(value):.3g}"  # type: ignore[arg-type]
    return str(value)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bsnn.sweep import sweep

    variants = [parse_variant(v) for v in args.variant]
    models, percentiles = args.model, args.percentile
    args.model, args.percentile = models[0], percentiles[0]
    base = replace(RunConfig.from_args(args), run_id=None)
    console = Console()
    console.print(f"{len(models) * len(percentiles) * len(variants)} runs into {base.job_dir}")

    def progress(r: dict) -> None:
        console.print(f"  {r['model']} ({r['arch']}, {r['dataset']}) p={r['percentile']} "
                      f"{r['variant']}: ANN {r['ann_acc']} %, "
                      f"SNN {r['final_acc']} % at T={base.time}, within 1 point from "
                      f"T={r['first_step_within_1pt']}", highlight=False)

    rows, path = sweep(base, models, percentiles, variants, on_row=progress)
    hidden = ("status", "run_id")
    cols = [k for k in rows[0] if k not in hidden and any(r[k] is not None for r in rows)]
    table = Table(title=f"sweep: {path}", show_edge=False, pad_edge=False)
    for col in cols:
        table.add_column(SHORT.get(col, col.removeprefix("acc")), justify="right")
    for r in rows:
        table.add_row(*["—" if r[k] is None else _short(k, r[k]) for k in cols])
    Console().print(table)
    return 0
