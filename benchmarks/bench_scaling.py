"""CPU scaling of `torchrun -m bsnn convert`: 1 vs N processes on the same evaluation images.

    python benchmarks/bench_scaling.py [--procs 1 2] [--time 128] [--eval-size -1]
                                       [--batch-size 32] [--model bundled:digits-fp] [--repeat 1]

Every run is a real `torchrun --nproc-per-node P -m bsnn convert` (gloo on loopback, one
intra-op thread a process), all in this one invocation, so the figures share the machine's
state. images/s is the simulation's (rank 0's clock from the first to the last batch, as in
summary.json), so process start-up and calibration are left out; `start-to-end s` is the whole
command. The per-step accuracy of every run is checked to be identical to the 1-process one.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_run(procs: int, job: Path, run_id: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "bsnn", "convert", "--model", args.model, "--dataset", args.dataset,
           "--time", str(args.time), "--eval_size", str(args.eval_size),
           "--batch-size", str(args.batch_size), "--device", "cpu", "--job-dir", str(job),
           "--run-id", run_id, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    total = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{procs} process(es) failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    summary = json.loads((job / run_id / "summary.json").read_text())
    return {"procs": procs, "images": summary["images"], "sim_s": summary["wall_time_s"],
            "images_per_s": summary["images_per_s"], "total_s": total,
            "accuracy": summary["accuracy_per_step"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--model", default="bundled:digits-fp")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--time", type=int, default=128)
    p.add_argument("--eval-size", type=int, default=-1, help="-1: the whole evaluation split")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeat", type=int, default=1, help="runs per process count; best is kept")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args()
    if args.procs[0] != 1:
        args.procs = [1, *args.procs]

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for procs in args.procs:
            runs = [one_run(procs, Path(tmp), f"p{procs}-{i}", args) for i in range(args.repeat)]
            rows.append(max(runs, key=lambda r: r["images_per_s"]))
    base = rows[0]
    print(f"{base['images']} images of {args.dataset}, {args.model}, T={args.time}, batch "
          f"{args.batch_size}, CPU, OMP_NUM_THREADS=1 a process, {os.cpu_count()} cores")
    print(f"{'procs':>5} {'sim s':>8} {'images/s':>9} {'speed-up':>9} {'efficiency':>10} "
          f"{'start-to-end s':>14} {'same result':>11}")
    for row in rows:
        speedup = row["images_per_s"] / base["images_per_s"]
        row.update(speedup=speedup, efficiency=speedup / row["procs"],
                   identical=row["accuracy"] == base["accuracy"])
        print(f"{row['procs']:>5} {row['sim_s']:>8.2f} {row['images_per_s']:>9.1f} "
              f"{speedup:>8.2f}x {100 * row['efficiency']:>9.0f}% {row['total_s']:>14.1f} "
              f"{'yes' if row['identical'] else 'NO':>11}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
