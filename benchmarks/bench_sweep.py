"""`bsnn sweep` inline vs `--launcher local`: the same small grid, timed in turns.

    python benchmarks/bench_sweep.py [--repeat 3] [--parallel 2] [--time 64] [--eval-size -1]
                                     [--batch-size 100]

The grid is 2 models (bundled:digits-fp, bundled:digits-binary) x 2 percentiles, 4 cells, the
`original` variant. Three contenders take turns in every repeat, so they share the machine's
state, each writing to a fresh job dir:

- inline: the command `bsnn sweep ...`, the cells one after another in its process with
  torch's default threads;
- local: the command `bsnn sweep ... --launcher local --parallel N`, each cell a submitit
  process with cores // N threads;
- warm inline: the same cells run inline in this process, which has already imported
  everything and run a cell (a stricter baseline than any command: no interpreter, no imports).

A time is the whole sweep, to the table written; for the commands, from the command's start to
its exit (the interpreter and imports included: what a user waits for). The target: local no
slower than inline on a 2-core machine (local / inline <= 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bsnn.config import RunConfig
from bsnn.sweep import grid, parse_variant, run_inline
from bsnn.sweep_record import plan
from bsnn.sweep_worker import cpu_share

MODELS = ["bundled:digits-fp", "bundled:digits-binary"]
PERCENTILES = [99.0, 99.9]
VARIANT = "original"
MODES = ("inline", "local", "warm inline")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return "unknown"


def int8_flags() -> str:
    flags = set(Path("/proc/cpuinfo").read_text().split())
    return " ".join(f for f in ("avx2", "avx512_vnni", "amx_int8") if f in flags) or "none"


def command(base: RunConfig, job: Path, launcher: str, parallel: int) -> list[str]:
    cmd = [sys.executable, "-m", "bsnn", "sweep", "--model", *MODELS, "--percentile",
           *map(str, PERCENTILES), "--variant", VARIANT, "--time", str(base.time),
           "--eval-size", str(base.eval_size), "--batch-size", str(base.batch_size),
           "--device", "cpu", "--job-dir", str(job)]
    return cmd + (["--launcher", "local", "--parallel", str(parallel)] if launcher == "local"
                  else [])


def one_sweep(mode: str, base: RunConfig, job: Path, parallel: int) -> float:
    """Seconds for the whole grid in `mode`; every cell must finish."""
    start = time.perf_counter()
    if mode == "warm inline":
        cells = grid(RunConfig(**{**base.to_dict(), "job_dir": str(job)}), MODELS, PERCENTILES,
                     [parse_variant(VARIANT)])
        table = run_inline(plan(cells, job, "inline"))
        ok = table.complete and len(table.rows) == len(cells)
    else:
        done = subprocess.run(command(base, job, mode, parallel), capture_output=True,
                              text=True, check=False)
        ok = done.returncode == 0
        if not ok:
            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
    seconds = time.perf_counter() - start
    if not ok:
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
    times: dict[str, list[float]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        warm = RunConfig(**{**base.to_dict(), "job_dir": f"{tmp}/warm-up"})
        run_inline(plan(grid(warm, MODELS[:1], PERCENTILES[:1], [parse_variant(VARIANT)]),
                        warm.job_dir, "inline"))
        for i in range(args.repeat):
            for mode in MODES:
                job = Path(tmp) / f"{mode.replace(' ', '-')}-{i}"
                times[mode].append(one_sweep(mode, base, job, args.parallel))
                print(f"repeat {i + 1} {mode}: {times[mode][-1]:.1f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    median = {m: statistics.median(times[m]) for m in MODES}
    print(f"\nCPU: {cpu_model()} ({int8_flags()}), {os.cpu_count()} cores; torch "
          f"{torch.__version__}; inline {torch.get_num_threads()} threads, local "
          f"{args.parallel} cells x {cpu_share(args.parallel)} thread(s)")
    print(f"grid: {len(MODELS)} models x {len(PERCENTILES)} percentiles, variant {VARIANT}, "
          f"T={args.time}, eval size {args.eval_size}, batch {args.batch_size}")
    print("| mode | runs (s) | median s |\n|---|---|---|")
    for mode in MODES:
        print(f"| {mode} | {', '.join(f'{t:.1f}' for t in times[mode])} | {median[mode]:.1f} |")
    ratio = median["local"] / median["inline"]
    print(f"local / inline = {ratio:.2f} (target <= 1: {'met' if ratio <= 1 else '**not met**'}); "
          f"local / warm inline = {median['local'] / median['warm inline']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
