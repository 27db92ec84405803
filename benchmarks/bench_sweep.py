"""`bsnn sweep` inline vs `--launcher local`: the same small grid, timed in turns.

    python benchmarks/bench_sweep.py [--repeat 3] [--parallel 2] [--time 64] [--eval-size -1]
                                     [--batch-size 100]

The grid is 2 models (bundled:digits-fp, bundled:digits-binary) x 2 percentiles, 4 cells. Both
modes run in this one process, alternating (inline, local, inline, local, ...), so they share
the machine's state; each repeat writes to a fresh job dir. Inline runs the cells one after
another here, with torch's default threads; local runs them through submitit, `--parallel` at
once, each in its own process with cores // parallel threads. A time is the whole sweep, from
planning to the table written (the local cells pay their own interpreter and imports). One
inline cell is run first, untimed, so that the first inline sweep does not pay this process's
warm-up. The target: local no slower than inline on a 2-core machine (ratio <= 1).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from bsnn.config import RunConfig
from bsnn.sweep import grid, parse_variant, run_inline
from bsnn.sweep_launch import LaunchOptions, cpu_share, launch
from bsnn.sweep_record import plan

MODELS = ["bundled:digits-fp", "bundled:digits-binary"]
PERCENTILES = [99.0, 99.9]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    line = next((x for x in out.splitlines() if x.startswith("Model name")), "")
    return line.partition(":")[2].strip() or "unknown"


def one_sweep(mode: str, base: RunConfig, job: Path, parallel: int) -> float:
    """Seconds for the whole grid in `mode`; every cell must finish."""
    cells = grid(RunConfig(**{**base.to_dict(), "job_dir": str(job)}), MODELS, PERCENTILES,
                 [parse_variant("paper")])
    start = time.perf_counter()
    if mode == "inline":
        table = run_inline(plan(cells, job, "inline"))
    else:
        table = launch(plan(cells, job, "local", parallel), LaunchOptions(parallel=parallel)).table
    seconds = time.perf_counter() - start
    if not table.complete or len(table.rows) != len(cells):
        raise SystemExit(f"{mode}: not every cell finished ({job})")
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--time", type=int, default=64)
    p.add_argument("--eval-size", type=int, default=-1)
    p.add_argument("--batch-size", type=int, default=100)
    args = p.parse_args()
    base = RunConfig(time=args.time, eval_size=args.eval_size, batch_size=args.batch_size,
                     device="cpu")
    times: dict[str, list[float]] = {"inline": [], "local": []}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        warm = RunConfig(**{**base.to_dict(), "job_dir": f"{tmp}/warm-up"})
        run_inline(plan(grid(warm, MODELS[:1], PERCENTILES[:1], [parse_variant("paper")]),
                        warm.job_dir, "inline"))
        for i in range(args.repeat):
            for mode in ("inline", "local"):
                seconds = one_sweep(mode, base, Path(tmp) / f"{mode}-{i}", args.parallel)
                times[mode].append(seconds)
                print(f"repeat {i + 1} {mode}: {seconds:.1f} s", flush=True)
    inline, local = (statistics.median(times[m]) for m in ("inline", "local"))
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; torch {torch.__version__}; inline "
          f"{torch.get_num_threads()} threads, local {args.parallel} cells x "
          f"{cpu_share(args.parallel)} thread(s)")
    print(f"grid: {len(MODELS)} models x {len(PERCENTILES)} percentiles, T={args.time}, "
          f"eval size {args.eval_size}, batch {args.batch_size}")
    print("| mode | runs (s) | median s |\n|---|---|---|")
    for mode in ("inline", "local"):
        print(f"| {mode} | {', '.join(f'{t:.1f}' for t in times[mode])} | "
              f"{statistics.median(times[mode]):.1f} |")
    verdict = "met" if local <= inline else "**not met**"
    print(f"local / inline = {local / inline:.2f} (target <= 1: {verdict})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
