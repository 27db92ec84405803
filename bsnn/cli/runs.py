"""`bsnn runs [JOB_DIR]`: the runs of a job dir with their status and accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the runs in a job dir")
    p.add_argument("job_dir", nargs="?", type=Path, default=Path("runs"))
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bsnn.rundir import list_runs

    table = Table(show_edge=False)
    for col in ("run", "status", "model", "dataset", "T", "images", "accuracy"):
        table.add_column(col)
    for s in list_runs(args.job_dir):
        acc = s["final_accuracy"]
        c = s["config"]
        table.add_row(s["run_id"] or "?", s["status"], str(c.get("model")),
                      str(c.get("dataset") or ""), str(c.get("time")), str(s["images"]),
                      "—" if acc is None else f"{100 * acc:.2f} %")
    Console().print(table)
    return 0
