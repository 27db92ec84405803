"""What a sweep's job runs, in its own process: its share of the threads, then cells in turn.

A local worker is handed every cell of the sweep, its own share first (dealt round robin) and
then the others' from their ends, and runs only the cells it claims: a file per cell in the
submission's claims folder, created exclusively, so each cell runs once. A worker that ends
its share takes what the slower workers have not begun, and a long cell no longer holds back
the short ones dealt after it. A Slurm task is handed its one cell, unclaimed.
"""

from __future__ import annotations

import os
import signal
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bsnn.config import RunConfig
from bsnn.errors import BsnnError


def cpu_share(parallel: int) -> int:
    """A cell's torch threads: this process's cores divided between the cells at once."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, parallel))


def claim_order(count: int, workers: int, worker: int) -> list[int]:
    """The cell indices a worker tries: its round-robin share, then the others' from last to
    first (so it takes the cells their workers would reach last)."""
    own = list(range(worker, count, workers))
    return own + [i for i in reversed(range(count)) if i % workers != worker]


def claim(folder: Path, run_id: str, worker: int) -> bool:
    """Whether this worker took the cell (its file was created here, naming the worker)."""
    try:
        fd = os.open(folder / run_id, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(str(worker))
    return True


def run_cells(configs: list[dict[str, Any]], threads: int | None, sweep_marker: str,
              claim_as: tuple[str, int] | None = None) -> dict[str, str]:
    """A job's process (submitit calls it): its share of the threads, then the one runner
    for each cell in turn (with `claim_as` (claims folder, worker), only the cells it claims).
    SIGINT, SIGTERM (Slurm's scancel) and the sweep's cancel marker all become a cancel at the
    next batch, so the run still writes its end, and the cells not begun yet never begin.
    Returns each run id's status; the table reads the run folders."""
    import torch

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    torch.set_num_threads(threads or cpu_share(1))
    marker = Path(sweep_marker)
    statuses = {}
    for config in configs:
        if stop.is_set() or marker.exists():
            break
        if claim_as is not None and not claim(Path(claim_as[0]), config["run_id"], claim_as[1]):
            continue
        statuses[config["run_id"]] = _run_cell(config, lambda: stop.is_set() or marker.exists())
    return statuses


def _run_cell(config: dict[str, Any], cancel: Callable[[], bool]) -> str:
    """One cell's run and its status; a failure is the cell's, never the next cell's."""
    from bsnn.pipeline.runner import run

    try:
        return run(RunConfig.from_dict(config), cancel=cancel).status
    except BsnnError as err:  # in its run folder's `failed` event, or before it had one
        print(f"error: {err.message}\nfix: {err.fix}", flush=True)
        return f"failed: {err}"
    except Exception:  # the run folder keeps the traceback; the worker goes on
        traceback.print_exc()
        return "failed"
