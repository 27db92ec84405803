"""The runs of a job dir, each summarised from its own event log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bsnn.events import EVENTS_FILE, read_events
from bsnn.report import summarize


def list_runs(job_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Summaries of every run folder under `job_dir`, oldest first."""
    root = Path(job_dir)
    if not root.is_dir():
        return []
    out = []
    for log in sorted(root.glob(f"*/{EVENTS_FILE}")):
        summary = summarize(read_events(log))
        summary["run_dir"] = str(log.parent)
        summary["run_id"] = summary["run_id"] or log.parent.name
        out.append(summary)
    return out
