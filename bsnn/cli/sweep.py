"""`bsnn sweep`: a grid of runs (models x percentiles x switches) and their comparison table,
run here one cell after another, or fanned out to processes or a Slurm cluster (submitit)."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from bsnn.config import RunConfig
from bsnn.errors import ConfigError
from bsnn.options import add_arguments
from bsnn.sweep import PRESETS, parse_variant
from bsnn.sweep_record import LAUNCHERS, Cell, Collected, SweepRecord

SLURM_ONLY = ("partition", "gpus_per_cell", "slurm_arg")


def register(sub: argparse._SubParsersAction) -> None:
    presets = "; ".join(f"{k}" + (f" ({v})" if v else "") for k, v in PRESETS.items())
    p = sub.add_parser(
        "sweep", help="run a grid of conversions and write a comparison table",
        description="Every model x percentile x variant is one ordinary run in --job-dir; the "
        "table (accuracy at T = 4 ... 128, first T within 1 point of the ANN, firing rate, "
        "synaptic operations per image) goes to <job-dir>/sweep-*.csv, .md and .png, the "
        "sweep's record (its cells' run ids and jobs) to <job-dir>/sweep-*.json. Exit code "
        "1 when a cell failed, was cancelled or is missing.")
    add_arguments(p, many=True)
    p.add_argument("--variant", nargs="+", default=["original"], metavar="VARIANT",
                   help=f"presets: {presets}; or NAME:key=value,key=value")
    g = p.add_argument_group("launching the cells")
    g.add_argument("--launcher", choices=LAUNCHERS, default="inline",
                   help="inline: one after another in this process (default); local: "
                   "--parallel worker processes on this machine sharing the cells, a GPU "
                   "each where there are GPUs; slurm: one job array on a Slurm cluster")
    g.add_argument("--parallel", type=int, metavar="N",
                   help="cells at once (local: the workers, default the GPUs, or 1; CPU "
                   "threads are divided between them; slurm: the array's parallelism, "
                   "default all)")
    g.add_argument("--partition", help="slurm: the partition to submit to")
    g.add_argument("--gpus-per-cell", type=int, metavar="G", help="slurm: GPUs per cell "
                   "(default 0)")
    g.add_argument("--time-limit", type=int, metavar="MIN", help="a cell's time limit in "
                   "minutes (slurm: default 60; local: none)")
    g.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="slurm: any other sbatch option, e.g. account=proj or "
                   "cpus-per-task=8 (repeat it)")
    g.add_argument("--collect", metavar="RECORD", help="rebuild the table of a sweep from its "
                   "record (<job-dir>/sweep-<id>.json) and the cells that have ended; runs "
                   "nothing")
    g.add_argument("--new", action="store_true", help="local/slurm: start the grid again even "
                   "when the job dir holds a record of it (by default that record is collected)")
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


def check_launch_flags(args: argparse.Namespace) -> dict[str, str]:
    """The launcher flags that fit together, and --slurm-arg as a dict; ConfigError else."""
    if args.parallel is not None and args.parallel < 1:
        raise ConfigError(f"--parallel {args.parallel} is not a number of cells",
                          "pass --parallel 1 or more")
    if args.launcher == "inline" and (args.parallel or 1) > 1:
        raise ConfigError("--parallel needs cells in processes of their own",
                          "add --launcher local (or --launcher slurm on a cluster)")
    given = [f"--{n.replace('_', '-')}" for n in SLURM_ONLY if getattr(args, n)]
    if args.launcher != "slurm" and given:
        raise ConfigError(f"{', '.join(given)} only apply to --launcher slurm",
                          "add --launcher slurm, or leave them out")
    if args.time_limit is not None and args.time_limit < 1:
        raise ConfigError(f"--time-limit {args.time_limit} is not a number of minutes",
                          "pass --time-limit 1 or more")
    extra = {}
    for item in args.slurm_arg:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm-arg {item!r} is not KEY=VALUE",
                              "pass e.g. --slurm-arg account=myproject")
        extra[key.strip().lstrip("-")] = value
    return extra


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bsnn.sweep import grid, run_inline
    from bsnn.sweep_record import collect, find, plan

    console = Console(highlight=False)
    if args.collect:
        record = SweepRecord.load(args.collect)
        console.print(f"collecting {record.path}: {len(record.cells)} runs")
        return report(console, record, collect(record))
    slurm_args = check_launch_flags(args)
    variants = [parse_variant(v) for v in args.variant]
    models, percentiles = args.model, args.percentile
    args.model, args.percentile = models[0], percentiles[0]
    base = replace(RunConfig.from_args(args), run_id=None)
    cells = grid(base, models, percentiles, variants)
    found = None if args.launcher == "inline" or args.new else find(cells, base.job_dir)
    if found is not None:
        console.print(f"{found.path} holds this sweep already: collecting it "
                      "(--new starts it again)")
        return report(console, found, collect(found))
    options = {"partition": args.partition, "gpus_per_cell": args.gpus_per_cell,
               "time_limit_min": args.time_limit, "slurm_args": slurm_args}
    record = plan(cells, base.job_dir, args.launcher, args.parallel or 1, options)
    console.print(f"{len(cells)} runs into {base.job_dir} ({args.launcher}); record: "
                  f"{record.path}")
    progress = _progress(console, base.time)
    if args.launcher == "inline":
        return report(console, record, run_inline(record, on_row=progress))
    return launched(console, record, args, slurm_args, progress)


def _progress(console: Any, time_steps: int) -> Any:
    def progress(r: dict) -> None:
        where = f"  {r['run_id']}: {r['model']} ({r['arch']}, {r['dataset']}) " \
                f"p={r['percentile']} {r['variant']}"
        if r["status"] != "finished":
            console.print(f"{where}: {r['status']}")
            return
        console.print(f"{where}: ANN {r['ann_acc']} %, SNN {r['final_acc']} % at "
                      f"T={time_steps}, within 1 point from T={r['first_step_within_1pt']}")
    return progress


def launched(console: Any, record: SweepRecord, args: argparse.Namespace,
             slurm_args: dict[str, str], progress: Any) -> int:
    """The local or Slurm launcher: wait for the cells; on Ctrl-C say which were cancelled."""
    from bsnn.sweep_launch import LaunchOptions, launch

    opts = LaunchOptions(parallel=args.parallel, partition=args.partition,
                         gpus_per_cell=args.gpus_per_cell or 0,
                         time_limit_min=args.time_limit, slurm_args=slurm_args)
    outcome = launch(record, opts, on_row=progress,
                     on_note=lambda text: console.print(f"note: {text}"))
    if not outcome.interrupted:
        return report(console, record, outcome.table)
    console.print(f"[bold]interrupted:[/] {len(outcome.stopped)} running cell(s) cancelled, "
                  f"{len(outcome.not_started)} never started")
    report(console, record, outcome.table)
    _cells(console, f"still running after {opts.grace_s:.0f} s (stop them with `bsnn "
           "cancel RUN_DIR`)", outcome.still_running)
    return 130


def _cells(console: Any, what: str, cells: list[Cell]) -> None:
    if cells:
        console.print(f"{what} ({len(cells)}):")
        for cell in cells:
            console.print(f"  {cell.label()}" + (f": {cell.error}" if cell.error else ""))


def report(console: Any, record: SweepRecord, table: Collected) -> int:
    """The table as it stands, then the cells not in it or not finished; 0 only when every
    cell finished."""
    from rich.table import Table

    rows = table.rows
    if rows:
        all_finished = all(r["status"] == "finished" for r in rows)
        hidden = ("run_id", "status") if all_finished else ("run_id",)
        cols = [k for k in rows[0] if k not in hidden and any(r[k] is not None for r in rows)]
        out = Table(title=f"sweep: {table.csv}", show_edge=False, pad_edge=False)
        for col in cols:
            out.add_column(SHORT.get(col, col.removeprefix("acc")), justify="right")
        for r in rows:
            out.add_row(*["—" if r[k] is None else _short(k, r[k]) for k in cols])
        console.print(out)
    _cells(console, "failed", table.failed)
    _cells(console, "cancelled", table.cancelled)
    _cells(console, "missing (never started, or still running)", table.missing)
    if table.complete:
        return 0
    console.print(f"collect again: bsnn sweep --collect {record.path}")
    return 1
