"""`bsnn runs [JOB_DIR]`: the runs of a job dir with their status and accuracy.

The run id is the value a user copies (for `bsnn cancel`, `bsnn-tui --attach`), so it is never
cut: on a narrow terminal the other columns fold or go, least useful first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bsnn.jobdir import ListedRun

# (column, minimum width it needs to stay readable), most useful first after the run id
COLUMNS = (("status", 11), ("accuracy", 9), ("T", 5), ("model", 12), ("dataset", 8),
           ("images", 7), ("arch", 8), ("p", 5), ("device", 6))
JSON_FIELDS = ("run_id", "run_dir", "status", "images", "images_total", "time_steps",
               "final_accuracy", "ann_accuracy", "started_at", "device", "resolved")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the runs in a job dir")
    p.add_argument("job_dir", nargs="?", type=Path, default=Path("runs"),
                   help="the job dir to list (default: runs)")
    p.add_argument("--json", action="store_true",
                   help="print the runs as a JSON list, for scripts")
    p.set_defaults(func=main)


def _cells(run: ListedRun) -> dict[str, str]:
    """One run's cells: the resolved values (bsnn.records.run_record), not the typed ones."""
    from bsnn.records import arch_text, run_record

    s = run.summary
    acc = s.final_accuracy
    r = run_record(s)
    return {"run": run.run_id, "status": s.status, "model": str(r["model"]),
            "dataset": str(r.get("dataset") or "?"), "arch": arch_text(r),
            "T": str(r["time_steps"]), "p": str(r["percentile"]),
            "device": str(r.get("device") or "?"), "images": str(s.images),
            "accuracy": "—" if acc is None else f"{100 * acc:.2f} %"}


def _as_json(run: ListedRun) -> dict[str, Any]:
    s = run.summary.to_dict() | {"run_id": run.run_id, "run_dir": str(run.run_dir)}
    return {k: s.get(k) for k in JSON_FIELDS} | {"config": s["config"]}


def columns_that_fit(width: int, id_width: int) -> list[str]:
    """The run id, then the most useful other columns that the width leaves room for (shown
    in the table's own order)."""
    room = width - id_width
    kept = []
    for name, need in COLUMNS:
        if room < need + 3:  # the column and its separator
            break
        kept.append(name)
        room -= need + 3
    order = ("status", "model", "arch", "dataset", "T", "p", "device", "images", "accuracy")
    return ["run", *(name for name in order if name in kept)]


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from bsnn.jobdir import iter_runs

    def skipped(folder: Path, why: str) -> None:
        print(f"skipped {folder}: {why}", file=sys.stderr)

    runs = list(iter_runs(args.job_dir, skipped=skipped))
    if args.json:
        print(json.dumps([_as_json(run) for run in runs], indent=2))
        return 0
    console = Console()
    rows = [_cells(s) for s in runs]
    id_width = max((len(r["run"]) for r in rows), default=3)
    names = columns_that_fit(console.width, id_width)
    table = Table(show_edge=False, pad_edge=False)
    for name in names:
        if name == "run":
            table.add_column(name, no_wrap=True, min_width=id_width)
        else:
            table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(row[name] for name in names))
    console.print(table)
    return 0
