"""`bsnn report RUN_DIR`: rebuild a run's summary files from its events.jsonl (also partial)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bsnn.errors import RunStorageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="rebuild a run's summary files from its event log")
    p.add_argument("run_dir", type=Path)
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bsnn.cli.progress import print_summary
    from bsnn.events import EVENTS_FILE, read_events
    from bsnn.report import summarize, write_exports

    log = args.run_dir / EVENTS_FILE
    if not log.is_file():
        raise RunStorageError(f"{log} not found", "pass a run folder (it holds events.jsonl)")
    events = read_events(log)
    console = Console()
    for path in write_exports(args.run_dir, events):
        console.print(f"wrote {path}")
    summary = summarize(events)
    console.print(f"status: [bold]{summary['status']}[/], {summary['images']} images")
    print_summary(console, summary)
    return 0
