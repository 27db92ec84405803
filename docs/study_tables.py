"""Markdown tables for the studies (docs/reproduction.md, docs/latency.md) from sweep job dirs.

Usage: python docs/study_tables.py JOB_DIR [JOB_DIR ...] [--steps 8,16,32,64,128,256]

One row per run of each job dir's sweep CSV, read from the run's own summary.json: the images
evaluated (n), the ANN's and the SNN's accuracy at each step with its standard error
(sqrt(p (1 - p) / n), binomial), the first step from which the SNN stays within 1 point of its
ANN, the firing rate over all spiking neurons and the synaptic operations per image.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any


def pct_se(p: float | None, n: int) -> str:
    """`p` as a percentage with its binomial standard error, e.g. 56.4 ± 1.6."""
    if p is None or not n:
        return "—"
    return f"{100 * p:.1f} ± {100 * math.sqrt(p * (1 - p) / n):.1f}"


def firing_rate(summary: dict[str, Any]) -> float | None:
    layers = [x for x in summary["layers"] if x.get("firing_rate") is not None]
    neurons = sum(x["neurons"] for x in layers)
    return sum(x["firing_rate"] * x["neurons"] for x in layers) / neurons if neurons else None


def table_row(cell: dict[str, str], summary: dict[str, Any], steps: list[int]) -> list[str]:
    n, acc = summary["images"], summary["accuracy_per_step"]
    rate, synops = firing_rate(summary), summary.get("synops_per_image")
    return [Path(cell["model"]).stem, cell["percentile"], cell["variant"], str(n),
            pct_se(summary["ann_accuracy"], n),
            *(pct_se(acc[t - 1], n) if t <= len(acc) else "—" for t in steps),
            str(summary["first_step_within_1pt"] or "—"),
            "—" if rate is None else f"{rate:.3f}",
            "—" if synops is None else f"{synops / 1e6:.2f}"]


def job_table(job_dir: Path, steps: list[int]) -> str:
    """The table of every sweep in `job_dir` (normally one)."""
    head = ["model", "p", "variant", "n", "ANN %", *(f"T={t}" for t in steps),
            "first T within 1 pt", "firing rate", "synops/img (M)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for sweep_csv in sorted(job_dir.glob("sweep-*.csv")):
        with open(sweep_csv, newline="") as f:
            for cell in csv.DictReader(f):
                summary = json.loads((job_dir / cell["run_id"] / "summary.json").read_text())
                lines.append("| " + " | ".join(table_row(cell, summary, steps)) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("job_dirs", nargs="+", type=Path)
    parser.add_argument("--steps", default="8,16,32,64,128,256",
                        help="comma-separated time steps to show (default: %(default)s)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    for job_dir in args.job_dirs:
        print(f"### {job_dir.name}\n\n{job_table(job_dir, steps)}\n")


if __name__ == "__main__":
    main()
