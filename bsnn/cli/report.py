"""`bsnn report RUN_DIR`: rebuild a run's summary files from its events.jsonl (also partial)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a run's summary files from its event log")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bsnn.cli.progress import print_summary
    from bsnn.runfolder import RunFolder
    from bsnn.summary import summarize

    folder = RunFolder.open(args.run_dir)
    events = folder.events()
    console = Console()
    for path in folder.write_exports(events):
        console.print(f"wrote {path}")
    summary = summarize(events)
    console.print(f"status: [bold]{summary.status}[/], {summary.images} images")
    print_summary(console, summary)
    return 0
